import ArgumentParser
import CommandSupport
import EdgeCore

/// `swiftedge-edge`: the edge node alone (KubeEdge's edgecore), without the cloud's code, for
/// small machines; the same flags as `swiftedge edge`.
@main
enum SwiftEdgeEdgeMain {
    static func main() { SwiftEdgeEdge.mainParkingMainThread() }
}

struct SwiftEdgeEdge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftedge-edge", abstract: "Run a SwiftEdge edge node (same flags as `swiftedge edge`).",
        subcommands: [EdgeCommand.self], defaultSubcommand: EdgeCommand.self)
}
