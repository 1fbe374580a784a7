import Synchronization

/// A value set once by one service (the API server's bound port) and awaited by others.
final class AwaitedValue<T: Sendable>: Sendable {
    let state = Mutex<(value: T?, waiters: [CheckedContinuation<T, Never>])>((nil, []))

    func set(_ v: T) {
        let waiters = state.withLock { s -> [CheckedContinuation<T, Never>] in
            s.value = v
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.resume(returning: v) }
    }

    var value: T {
        get async {
            await withCheckedContinuation { c in
                let v = state.withLock { s -> T? in
                    if let v = s.value { return v }
                    s.waiters.append(c)
                    return nil
                }
                if let v { c.resume(returning: v) }
            }
        }
    }
}
