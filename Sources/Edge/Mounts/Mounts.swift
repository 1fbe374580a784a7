#if canImport(Glibc)
import Glibc
#endif

/// A mount or unmount the kernel refused.
public struct MountError: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var errno: Int32
    public init(_ operation: String, _ path: String, errno: Int32) { self.operation = operation; self.path = path; self.errno = errno }
    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}

/// The mounts of this process's mount namespace (`/proc/self/mountinfo`) and the bind mounts
/// CSI volumes are made of. Paths are compared as the kernel reports them (absolute, resolved).
public enum Mounts {
    /// The mount points, in mount order.
    public static func mountPoints(mountinfo path: String = "/proc/self/mountinfo") -> [String] {
        guard let f = fopen(path, "r") else { return [] }
        defer { fclose(f) }
        var out: [String] = []
        var line: UnsafeMutablePointer<CChar>?
        var cap = 0
        defer { free(line) }
        while getline(&line, &cap, f) > 0, let line {
            let fields = String(cString: line).split(separator: " ", omittingEmptySubsequences: true)
            if fields.count > 4 { out.append(unescape(fields[4])) }
        }
        return out
    }

    /// mountinfo escapes space, tab, newline and backslash as `\ooo`.
    static func unescape(_ s: Substring) -> String {
        guard s.contains("\\") else { return String(s) }
        var bytes: [UInt8] = []
        var u = Array(s.utf8)[...]
        while let b = u.first {
            if b == UInt8(ascii: "\\"), u.count >= 4, let v = UInt8(String(decoding: u.dropFirst().prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(v); u = u.dropFirst(4)
            } else {
                bytes.append(b); u = u.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The path with symlinks resolved (itself when it does not exist).
    public static func resolved(_ path: String) -> String {
        guard let r = realpath(path, nil) else { return path }
        defer { free(r) }
        return String(cString: r)
    }

    public static func isMountPoint(_ path: String) -> Bool {
        let p = resolved(path)
        return mountPoints().contains(p)
    }

    /// Mount points at or below `directory`.
    public static func mounts(under directory: String) -> [String] {
        let d = resolved(directory)
        return mountPoints().filter { $0 == d || $0.hasPrefix(d.hasSuffix("/") ? d : d + "/") }
    }

    /// Bind-mounts `source` on `target` (read-only with a second, remounting call, as `mount
    /// --bind -o ro` does).
    public static func bind(_ source: String, on target: String, readOnly: Bool) throws(MountError) {
        if mount(source, target, nil, UInt(MS_BIND), nil) != 0 { throw MountError("bind mount \(source) on", target, errno: errno) }
        if readOnly, mount(nil, target, nil, UInt(MS_BIND | MS_REMOUNT | MS_RDONLY), nil) != 0 {
            let e = errno
            _ = umount2(target, 0)
            throw MountError("read-only remount of", target, errno: e)
        }
    }

    /// Unmounts `target`; a path that is not a mount point is left as it is.
    public static func unmount(_ target: String) throws(MountError) {
        guard isMountPoint(target) else { return }
        if umount2(target, 0) != 0 {
            let e = errno
            if e == EINVAL || e == ENOENT { return }
            throw MountError("unmount", target, errno: e)
        }
    }
}
