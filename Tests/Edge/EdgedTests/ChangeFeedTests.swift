import KubeAPI
import MetaStore
import Testing

/// The edge store's change feed never hands a slow subscriber a stream with a gap: it used to
/// drop the oldest changes silently; now the subscriber's stream ends (it re-reads the store).
@Suite struct ChangeFeedTests {
    func change(_ i: Int) -> MetaChange {
        MetaChange(kind: .modified, record: MetaRecord(key: "default/pod/p\(i)", type: .pod, uid: "u\(i)", resourceVersion: UInt64(i),
                                                        value: ["metadata": ["name": .string("p\(i)")]]))
    }

    @Test func aSubscriberThatFallsBehindIsEndedNotSkipped() async {
        let feed = MetaChangeFeed(buffer: 3)
        let slow = feed.subscribe()
        let fast = feed.subscribe()
        var fastSeen: [UInt64] = []
        var it = fast.makeAsyncIterator()
        for i in 1...5 {
            feed.publish(change(i))
            if let c = await it.next() { fastSeen.append(c.record.resourceVersion) }
        }
        #expect(fastSeen == [1, 2, 3, 4, 5])
        // The slow one holds the first three, in order, and then its stream ends: no gap.
        var slowSeen: [UInt64] = []
        for await c in slow { slowSeen.append(c.record.resourceVersion) }
        #expect(slowSeen == [1, 2, 3])
        // A new subscription gets what comes next.
        let again = feed.subscribe()
        feed.publish(change(6))
        var it2 = again.makeAsyncIterator()
        #expect(await it2.next()?.record.resourceVersion == 6)
    }
}
