// The `lightcap` command line: one subcommand per file.

import ArgumentParser

@main
struct LightCapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lightcap",
        abstract: "Caption images on the CPU with a small LightCap model.",
        subcommands: [CaptionCommand.self, EvalCommand.self, BenchCommand.self, InspectCommand.self,
                      ServeCommand.self, QuantizeCommand.self])
}
