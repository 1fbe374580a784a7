
import Foundation
import Testing
@testable import AsyncSupport

/// WakeSignal's timed wait: ends at its deadline, earlier on a signal or cancellation, and a timer
/// left from an earlier wait never ends a later one.
@Suite struct WakeSignalTests {
    func elapsed(_ body: () async -> Void) async -> Duration {
        let start = ContinuousClock.now
        await body()
        return ContinuousClock.now - start
    }

    @Test func timedWaitEndsAtItsDeadline() async {
        let wake = WakeSignal()
        let took = await elapsed { await wake.wait(until: .now + .milliseconds(80)) }
        #expect(took >= .milliseconds(80))
        #expect(took < .seconds(5))
    }

    @Test func aSignalEndsATimedWaitEarly() async {
        let wake = WakeSignal()
        let took = await elapsed {
            async let waited: Void = wake.wait(until: .now + .seconds(30))
            wake.signal()  // before or after it parks: either way it returns
            await waited
        }
        #expect(took < .seconds(5))
    }

    @Test func anEarlierWaitsTimerDoesNotEndALaterWait() async {
        let wake = WakeSignal()
        wake.signal()
        await wake.wait(until: .now + .milliseconds(20))  // ends at once on the pending signal
        let took = await elapsed { await wake.wait(until: .now + .milliseconds(300)) }
        #expect(took >= .milliseconds(300))
        // And a timer that fires for a wait that has ended is ignored, whatever its timing.
        wake.expire(1)
        let again = await elapsed { await wake.wait(until: .now + .milliseconds(100)) }
        #expect(again >= .milliseconds(100))
    }

    @Test func cancellationEndsATimedWait() async {
        let wake = WakeSignal()
        let took = await elapsed {
            let task = Task { await wake.wait(until: .now + .seconds(30)) }
            task.cancel()
            await task.value
        }
        #expect(took < .seconds(5))
    }

    @Test func aDeadlineCenturiesAwayIsNeverAndASignalStillEndsIt() async {
        let wake = WakeSignal()
        let took = await elapsed {
            async let waited: Void = wake.wait(until: .now + .seconds(Int64.max / 4))
            wake.signal()
            await waited
        }
        #expect(took < .seconds(5))
    }
}
