import ArgumentParser

@main
struct LightCapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lightcap",
        abstract: "Caption images on the CPU with a small LightCap model.",
        subcommands: [ServeCommand.self])
}
