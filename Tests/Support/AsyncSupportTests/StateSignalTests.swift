import AsyncSupport
import Testing

/// The one "connected" signal: current value first, then changes only, to every subscriber.
@Suite struct StateSignalTests {
    @Test func subscribersGetTheCurrentValueThenChanges() async {
        let signal = StateSignal(false)
        var early = signal.updates().makeAsyncIterator()
        #expect(await early.next() == false)
        #expect(signal.set(true))
        #expect(!signal.set(true))  // no change, nothing sent
        var late = signal.updates().makeAsyncIterator()
        #expect(await late.next() == true)
        #expect(signal.set(false))
        #expect(await early.next() == true)
        #expect(await early.next() == false)
        #expect(await late.next() == false)
        #expect(signal.value == false)
    }
}
