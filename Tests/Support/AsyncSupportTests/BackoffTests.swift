import AsyncSupport
import Testing

/// The one back-off: doubling, capped, jittered within its range, reset after a healthy attempt.
@Suite struct BackoffTests {
    @Test func doublesUpToTheCapWithoutJitter() {
        var b = Backoff(base: .milliseconds(100), max: .milliseconds(700), jitter: 1...1)
        let delays = (0..<6).map { _ in b.next() }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(700), .milliseconds(700), .milliseconds(700)])
        b.reset()
        #expect(b.next() == .milliseconds(100))
    }

    @Test func jitterStaysInItsRange() {
        var g = SystemRandomNumberGenerator()
        var a = Backoff(base: .seconds(1), max: .seconds(30))
        let first = a.next(using: &g)
        #expect(first >= .milliseconds(500) && first <= .milliseconds(1500))
        #expect(a.step == .seconds(2))
        var b = Backoff(base: .seconds(1), max: .seconds(30))
        for _ in 0..<50 { b.reset(); let d = b.next(); #expect(d >= .milliseconds(500) && d <= .milliseconds(1500)) }
        var c = Backoff(base: .seconds(2), max: .seconds(30), jitter: 0.5...1.0)
        for _ in 0..<50 {
            let step = c.step
            let d = c.next()
            #expect(d >= step * 0.5 && d <= step)
        }
    }

    @Test func aHealthyAttemptResetsOnlyWhenItLastedLongEnough() {
        var b = Backoff(base: .milliseconds(200), max: .seconds(5), jitter: 1...1)
        _ = b.next(); _ = b.next()
        b.attemptEnded(after: .seconds(10), healthy: .seconds(60))
        #expect(b.step == .milliseconds(800))
        b.attemptEnded(after: .seconds(61), healthy: .seconds(60))
        #expect(b.step == .milliseconds(200))
    }

    @Test func aCapBelowTheBaseIsTheBase() {
        var b = Backoff(base: .seconds(2), max: .seconds(1), jitter: 1...1)
        #expect(b.next() == .seconds(2) && b.next() == .seconds(2))
    }
}
