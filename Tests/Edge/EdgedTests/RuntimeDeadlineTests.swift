import Testing
@testable import ContainerRuntime

/// CRI calls keep a deadline without grpc-swift's (which leaves a sleep allocated until it expires).
@Suite struct RuntimeDeadlineTests {
    @Test func aCallThatAnswersInTimeReturnsItsValue() async throws {
        let value = try await CRIRuntime.within(.seconds(30), "Version") { 42 }
        #expect(value == 42)
    }

    @Test func aCallWithoutAnAnswerIsCancelledAtTheDeadline() async throws {
        let start = ContinuousClock.now
        do {
            _ = try await CRIRuntime.within(.milliseconds(100), "StartContainer") { () async throws -> Int in
                try await Task.sleep(for: .seconds(60))  // a runtime that never answers
                return 0
            }
            Issue.record("no deadline")
        } catch let e as RuntimeError {
            #expect(e.kind == .deadlineExceeded)
            #expect(e.operation == "StartContainer")
        }
        let took = ContinuousClock.now - start
        #expect(took >= .milliseconds(100) && took < .seconds(10))
    }

    @Test func errorsOfTheCallPassThrough() async {
        struct Refused: Error {}
        await #expect(throws: Refused.self) {
            _ = try await CRIRuntime.within(.seconds(30), "RemoveContainer") { () async throws -> Int in throw Refused() }
        }
    }
}
