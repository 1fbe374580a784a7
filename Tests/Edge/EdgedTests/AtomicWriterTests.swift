import Foundation
import Testing
@testable import Edged

/// Volume files as kubelet writes them (visible names through `..data`, swapped in one rename,
/// old sets removed) and subPaths that stay in their volume.
@Suite struct AtomicWriterTests {
    func scratch() throws -> String {
        let dir = NSTemporaryDirectory() + "atomic-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func filesAreSwappedAsOneSet() throws {
        let root = try scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let b = RuntimeConfigBuilder(nodeName: "n", nodeIP: "ip", podsDirectory: root, logDirectory: root, lookup: { _ in nil })
        let dir = root + "/vol"
        try b.writeFiles(["a": Array("1".utf8), "sub/b": Array("2".utf8)], to: dir)
        let fm = FileManager.default
        #expect(try fm.destinationOfSymbolicLink(atPath: dir + "/a") == "..data/a")
        #expect(try fm.destinationOfSymbolicLink(atPath: dir + "/sub") == "..data/sub")
        let first = try fm.destinationOfSymbolicLink(atPath: dir + "/..data")
        #expect(String(decoding: fm.contents(atPath: dir + "/sub/b") ?? Data(), as: UTF8.self) == "2")
        // Unchanged content: nothing is written.
        try b.writeFiles(["a": Array("1".utf8), "sub/b": Array("2".utf8)], to: dir)
        #expect(try fm.destinationOfSymbolicLink(atPath: dir + "/..data") == first)
        // Changed: a new set, the old one gone, a dropped key no longer visible.
        try b.writeFiles(["a": Array("3".utf8)], to: dir)
        let second = try fm.destinationOfSymbolicLink(atPath: dir + "/..data")
        #expect(second != first && second.hasPrefix("..20"))
        #expect(String(decoding: fm.contents(atPath: dir + "/a") ?? Data(), as: UTF8.self) == "3")
        #expect(!fm.fileExists(atPath: dir + "/sub") && !fm.fileExists(atPath: dir + "/" + first))
        #expect(Set(try fm.contentsOfDirectory(atPath: dir)) == ["..data", second, "a"])
        // Paths from the wire never leave the directory.
        #expect(throws: ConfigError.self) { try b.writeFiles(["../x": []], to: dir) }
        #expect(throws: ConfigError.self) { try b.writeFiles(["..data": []], to: dir) }
    }

    @Test func subPathsStayInTheirVolume() throws {
        let root = try scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let vol = root + "/vol"
        try FileManager.default.createDirectory(atPath: vol + "/inside", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: vol + "/out", withDestinationPath: "/")
        try FileManager.default.createSymbolicLink(atPath: vol + "/in", withDestinationPath: "inside")
        #expect(try RuntimeConfigBuilder.subPath("inside", in: vol).hasSuffix("/vol/inside"))
        #expect(try RuntimeConfigBuilder.subPath("in", in: vol).hasSuffix("/vol/inside"))  // a link inside is fine
        #expect(try RuntimeConfigBuilder.subPath("new/dir", in: vol).hasSuffix("/vol/new/dir"))  // created
        #expect(FileManager.default.fileExists(atPath: vol + "/new/dir"))
        for bad in ["out", "out/etc", "out/nonexistent/x", "../vol", "/etc"] {
            #expect(throws: ConfigError.self, "\(bad)") { try RuntimeConfigBuilder.subPath(bad, in: vol) }
        }
        #expect(!FileManager.default.fileExists(atPath: "/nonexistent"))
    }
}
