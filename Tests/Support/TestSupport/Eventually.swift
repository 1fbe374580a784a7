/// A condition that did not become true before its deadline.
public struct EventuallyTimeout: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var timeout: Duration
    public var file: String
    public var line: Int
    public var description: String { "\(file):\(line): not true within \(timeout): \(message)" }
}

/// Polls `condition` every `interval` until it returns true; throws ``EventuallyTimeout`` once
/// `timeout` has passed (the last evaluation happens at or after the deadline). Errors thrown by
/// the condition propagate at once. This bounded polling is the only waiting tests should do.
public func eventually(timeout: Duration = .seconds(5), interval: Duration = .milliseconds(10),
                       _ message: @autoclosure () -> String = "condition",
                       file: String = #fileID, line: Int = #line,
                       _ condition: () async throws -> Bool) async throws
{
    let deadline = ContinuousClock.now + timeout
    while true {
        if try await condition() { return }
        if ContinuousClock.now >= deadline { throw EventuallyTimeout(message: message(), timeout: timeout, file: file, line: line) }
        try await Task.sleep(for: interval)
    }
}

/// Polls `value` until it returns non-nil and returns it; throws ``EventuallyTimeout`` after `timeout`.
public func eventuallyValue<T>(timeout: Duration = .seconds(5), interval: Duration = .milliseconds(10),
                               _ message: @autoclosure () -> String = "value",
                               file: String = #fileID, line: Int = #line,
                               _ value: () async throws -> T?) async throws -> T
{
    let deadline = ContinuousClock.now + timeout
    while true {
        if let v = try await value() { return v }
        if ContinuousClock.now >= deadline { throw EventuallyTimeout(message: message(), timeout: timeout, file: file, line: line) }
        try await Task.sleep(for: interval)
    }
}

/// Checks that `condition` stays true for `duration` (polled every `interval`); throws
/// ``EventuallyTimeout`` (describing the violation) the first time it is false. For asserting that
/// something does *not* happen, after the events that could cause it have been processed.
public func consistently(for duration: Duration = .milliseconds(300), interval: Duration = .milliseconds(10),
                         _ message: @autoclosure () -> String = "condition",
                         file: String = #fileID, line: Int = #line,
                         _ condition: () async throws -> Bool) async throws
{
    let deadline = ContinuousClock.now + duration
    while true {
        if !(try await condition()) {
            throw EventuallyTimeout(message: "stopped holding: " + message(), timeout: duration, file: file, line: line)
        }
        if ContinuousClock.now >= deadline { return }
        try await Task.sleep(for: interval)
    }
}
