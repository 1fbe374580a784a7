import ComponentConfig
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A long-running SwiftEdge process that `init`/`join` install and `reset` removes: as a systemd
/// unit where systemd runs, or as a detached background process with a pid file and a log file.
public struct ManagedProcess: Sendable {
    /// Unit and file name stem: `cloudcore` or `edgecore` (KubeEdge's unit names).
    public var name: String
    public var description: String
    public var executable: String
    public var arguments: [String]
    /// Where the detached process writes its output, and its pid.
    public var logPath: String
    public var pidPath: String
    public var unitDirectory: String

    public init(name: String, description: String, executable: String, arguments: [String], logPath: String, pidPath: String,
                unitDirectory: String)
    {
        self.name = name; self.description = description; self.executable = executable; self.arguments = arguments
        self.logPath = logPath; self.pidPath = pidPath; self.unitDirectory = unitDirectory
    }

    /// glibc's `POSIX_SPAWN_SETSID` (declared only under `_GNU_SOURCE`, so not imported).
    static let spawnSetSID: Int16 = 0x80

    public var unitPath: String { unitDirectory + "/" + name + ".service" }

    /// Whether this machine was booted with systemd (what `sd_booted()` checks).
    public static var systemdRunning: Bool { FileManager.default.fileExists(atPath: "/run/systemd/system") }

    /// The unit file: restarts on failure, stops with SIGTERM (the process shuts down gracefully).
    public var unitText: String {
        let exec = ([executable] + arguments).map(Self.quoteForSystemd).joined(separator: " ")
        return """
            [Unit]
            Description=\(description)
            Documentation=https://github.com/swiftedge/swiftedge
            After=network-online.target
            Wants=network-online.target

            [Service]
            Type=simple
            ExecStart=\(exec)
            Restart=always
            RestartSec=5
            KillSignal=SIGTERM
            TimeoutStopSec=60
            LimitNOFILE=65536

            [Install]
            WantedBy=multi-user.target

            """
    }

    static func quoteForSystemd(_ s: String) -> String {
        s.contains(where: { $0 == " " || $0 == "\"" || $0 == "\\" || $0 == "'" })
            ? "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" : s
    }

    public func writeUnit() throws {
        try FileManager.default.createDirectory(atPath: unitDirectory, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: unitPath, contents: Data(unitText.utf8), attributes: [.posixPermissions: 0o644]) else {
            throw ConfigError("cannot write \(unitPath)")
        }
    }

    /// `systemctl daemon-reload` and `enable --now` the unit.
    public func startWithSystemd() throws {
        try Self.systemctl(["daemon-reload"])
        try Self.systemctl(["enable", "--now", name + ".service"])
    }

    /// Starts the process in its own session (it outlives this command and its terminal), output
    /// appended to ``logPath``; records its pid in ``pidPath``.
    @discardableResult
    public func startDetached() throws -> Int32 {
        if let pid = runningPID() { throw ConfigError("\(name) already runs (pid \(pid), \(pidPath)): run `swiftedge reset` first") }
        for dir in [(logPath as NSString).deletingLastPathComponent, (pidPath as NSString).deletingLastPathComponent] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Self.spawnSetSID)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard rc == 0 else { throw ConfigError("cannot start \(executable): \(String(cString: strerror(rc)))") }
        guard FileManager.default.createFile(atPath: pidPath, contents: Data("\(pid)\n".utf8)) else {
            kill(pid, SIGTERM)
            throw ConfigError("cannot write \(pidPath)")
        }
        return pid
    }

    /// The pid from ``pidPath`` if that process is alive and is still ours.
    public func runningPID() -> Int32? {
        guard let text = try? String(contentsOfFile: pidPath, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, kill(pid, 0) == 0
        else { return nil }
        // A reused pid belongs to another program: check the command line names our executable.
        if let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
           let first = cmdline.split(separator: 0).first, let argv0 = String(data: Data(first), encoding: .utf8),
           (argv0 as NSString).lastPathComponent != (executable as NSString).lastPathComponent
        {
            return nil
        }
        return pid
    }

    /// Stops the detached process (SIGTERM, then SIGKILL after `timeout`) and removes the pid
    /// file. Returns whether a process was running.
    @discardableResult
    public func stopDetached(timeout: Duration = .seconds(30)) async -> Bool {
        defer { try? FileManager.default.removeItem(atPath: pidPath) }
        guard let pid = runningPID() else { return false }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, kill(pid, 0) == 0 {
            // Not our child (it was started by an earlier command), so it cannot be waited for;
            // /proc says when it is gone.
            if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), stat.contains(") Z ") { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        return true
    }

    /// Stops and disables the unit (if systemd knows it) and removes its file.
    public func removeUnit() throws {
        guard FileManager.default.fileExists(atPath: unitPath) else { return }
        if Self.systemdRunning {
            try? Self.systemctl(["disable", "--now", name + ".service"])
        }
        try FileManager.default.removeItem(atPath: unitPath)
        if Self.systemdRunning { try? Self.systemctl(["daemon-reload"]) }
    }

    static func systemctl(_ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/systemctl")
        p.arguments = args
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        do { try p.run() } catch { throw ConfigError("cannot run systemctl \(args.joined(separator: " ")): \(error)") }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            let text = String(data: err.fileHandleForReading.readDataToEndOfFile(), encoding: .utf8) ?? ""
            throw ConfigError("systemctl \(args.joined(separator: " ")) failed: \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
