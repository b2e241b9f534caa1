use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use pydeployer::app;
use pydeployer::cli::{Cli, Format};
use pydeployer::error::Failure;

fn main() -> ExitCode {
    // `PYDEPLOYER_COMPLETE=bash pydeployer -- …`: the shell asks for completions.
    app::shell::complete_if_asked();
    // No command opens the menu on a terminal; elsewhere it prints the help (exit 2).
    let on_terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let matches = Cli::command()
        .arg_required_else_help(!on_terminal)
        .get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    // Without -f, the project is found from any folder inside it; `init` and `import` write
    // where they are.
    let default_file = matches!(
        matches.value_source("file"),
        None | Some(clap::parser::ValueSource::DefaultValue)
    );
    let writes_here = matches!(
        cli.command,
        Some(pydeployer::cli::Command::Init | pydeployer::cli::Command::Import(_))
    );
    if default_file && !writes_here {
        if let Some(found) = pydeployer::config::find_upward(&cli.file) {
            cli.file = found;
        }
    }
    let color = app::use_color(cli.color);
    // Off a terminal (CI logs, scripts that grep), a message stays on one line.
    let wrap = std::io::stderr().is_terminal();
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(color)
                .unicode(color)
                .wrap_lines(wrap)
                .terminal_links(false)
                .context_lines(1)
                .build(),
        )
    }));
    let code = match app::run(&cli) {
        Ok(()) => 0,
        Err(failure) => {
            let code = failure.exit_code();
            match failure {
                Failure::Invalid(invalid) if cli.format == Format::Json => {
                    pydeployer::outln!("{}", app::json::InvalidJson::render(&invalid, &cli.file));
                    pydeployer::errln!("{invalid}");
                }
                // A stream reader gets one line, as every other line of the stream.
                Failure::Invalid(invalid) if cli.format == Format::Jsonl => {
                    let json = app::json::InvalidJson::new(&invalid, &cli.file);
                    pydeployer::outln!("{}", serde_json::to_string(&json).unwrap_or_default());
                    pydeployer::errln!("{invalid}");
                }
                Failure::Invalid(invalid) => {
                    let summary = invalid.to_string();
                    for problem in invalid.problems {
                        pydeployer::errln!("{:?}", miette::Report::new(problem));
                    }
                    pydeployer::errln!("{summary}");
                }
                Failure::Tool(report) | Failure::Busy(report) if cli.format != Format::Text => {
                    // What a script reading stdout needs: why, and the exit code it gets.
                    let json = serde_json::json!({
                        "error": report.to_string(),
                        "help": report.help().map(|help| help.to_string()),
                        "busy": code == pydeployer::error::exit::BUSY,
                        "exit_code": code,
                    });
                    let text = if cli.format == Format::Jsonl {
                        serde_json::to_string(&json)
                    } else {
                        serde_json::to_string_pretty(&json)
                    };
                    pydeployer::outln!("{}", text.unwrap_or_default());
                    pydeployer::errln!("{report:?}");
                }
                Failure::Tool(report) | Failure::Busy(report) => pydeployer::errln!("{report:?}"),
                Failure::Exit(_) => {}
            }
            code
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
