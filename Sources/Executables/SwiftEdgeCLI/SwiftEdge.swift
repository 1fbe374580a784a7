import ArgumentParser
import CloudCore
import CommandSupport
import EdgeCore

/// `swiftedge`: one binary, one subcommand per role.
@main
enum SwiftEdgeMain {
    static func main() { SwiftEdge.mainParkingMainThread() }
}

struct SwiftEdge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftedge",
        abstract: "SwiftEdge: Kubernetes-native edge computing in Swift.",
        subcommands: [APIServerCommand.self, ControllerManagerCommand.self, CloudCommand.self, AdmissionCommand.self, GetTokenCommand.self, EdgeCommand.self,
                      InitCommand.self, JoinCommand.self, ResetCommand.self, MapperCommand.self, CSICommand.self])
}

