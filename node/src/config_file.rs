//! `--config FILE`: a TOML file holding any long flag of `treecast broadcast`, `relay` or `view`
//! under the same name in snake_case (`upload_mbps = 20` for `--upload-mbps 20`), the style of
//! `treecast-signal --config`. Flags on the command line override the file's keys.
//!
//! How: the file's keys become arguments placed before the command line's own, and clap parses
//! the result, so a key is checked exactly as its flag is (one value parser, one set of
//! conflicts). A key whose flag is also on the command line is left out, which is what makes a
//! repeatable flag there (`--bootstrap`) replace the file's list rather than extend it.
//! Precedence: command line, then file, then environment (`TREECAST_WHIP_TOKEN`), then defaults.
//!
//! ```toml
//! stream = "demo"
//! bootstrap = ["/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."]
//! http = "0.0.0.0:8081"
//! upload_mbps = 20
//! no_mdns = true
//! ```

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};

/// Why the configuration file cannot be used. Every message names the file; the node does not
/// start.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {reason}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why (shown in the message, so not a `source`).
        reason: std::io::Error,
    },
    /// Not TOML.
    #[error("config file {} is not valid TOML: {message}", file.display())]
    Toml {
        /// The file.
        file: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key that is no flag of this command.
    #[error("config file {}: unknown key `{key}` for `treecast {command}`{hint}; known keys: {known}", file.display())]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
        /// The subcommand.
        command: String,
        /// ", did you mean `x`?" or nothing.
        hint: String,
        /// All keys this command accepts.
        known: String,
    },
    /// A value clap (or this module) refuses.
    #[error("config file {}: key `{key}`: {message}", file.display())]
    Value {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The command line with the file's settings merged in; parse [`Merged::args`] with clap and
/// pass a parse error through [`Merged::explain`].
#[derive(Debug, Clone)]
pub struct Merged {
    /// The arguments to parse: program, subcommand, the file's flags, the command line's.
    pub args: Vec<OsString>,
    file: Option<PathBuf>,
    /// Long flag name -> key, for the flags that came from the file.
    from_file: Vec<(String, String)>,
}

/// Merges the `--config FILE` of the subcommand in `args` (if any) into `args`. `cmd` is the
/// whole CLI (`Cli::command()`); subcommands without a `config` argument are left alone.
pub fn merge(cmd: &Command, args: Vec<OsString>) -> Result<Merged, FileError> {
    let unchanged = |args| Merged {
        args,
        file: None,
        from_file: Vec::new(),
    };
    // The subcommand is the first argument after the program that is not an option.
    let Some(sub_at) = args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
        .map(|i| i + 1)
    else {
        return Ok(unchanged(args));
    };
    let sub_name = args[sub_at].to_string_lossy().into_owned();
    let Some(sub) = cmd.find_subcommand(&sub_name) else {
        return Ok(unchanged(args));
    };
    if !sub.get_arguments().any(|a| a.get_id() == "config") {
        return Ok(unchanged(args));
    }
    let rest = &args[sub_at + 1..];
    let Some(file) = config_path(rest) else {
        return Ok(unchanged(args));
    };
    let text = std::fs::read_to_string(&file).map_err(|reason| FileError::Read {
        file: file.clone(),
        reason,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| FileError::Toml {
        file: file.clone(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let on_command_line = given_flags(sub, rest);
    let mut file_args: Vec<OsString> = Vec::new();
    let mut from_file = Vec::new();
    for (key, value) in &table {
        let arg = settable(sub)
            .find(|a| key_of(a) == *key)
            .ok_or_else(|| unknown_key(&file, sub, key))?;
        if on_command_line.contains(arg.get_id().as_str()) {
            continue;
        }
        let long = arg.get_long().unwrap_or_default().to_owned();
        let bad = |message: String| FileError::Value {
            file: file.clone(),
            key: key.clone(),
            message,
        };
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => match value {
                toml::Value::Boolean(true) => file_args.push(format!("--{long}").into()),
                toml::Value::Boolean(false) => {}
                other => return Err(bad(format!("expected true or false, got {other}"))),
            },
            ArgAction::Append => {
                let items = match value {
                    toml::Value::Array(items) => items.clone(),
                    one => vec![one.clone()],
                };
                for item in &items {
                    file_args.push(format!("--{long}").into());
                    file_args.push(scalar(item).map_err(&bad)?.into());
                }
            }
            _ => {
                file_args.push(format!("--{long}").into());
                file_args.push(scalar(value).map_err(&bad)?.into());
            }
        }
        from_file.push((long, key.clone()));
    }
    let mut merged: Vec<OsString> = args[..=sub_at].to_vec();
    merged.extend(file_args);
    merged.extend(rest.iter().cloned());
    Ok(Merged {
        args: merged,
        file: Some(file),
        from_file,
    })
}

impl Merged {
    /// A clap error on [`Merged::args`], said in terms of the file when one of its keys is the
    /// culprit (`Err`); otherwise the clap error itself (`Ok`), to be shown as clap shows it.
    pub fn explain(&self, err: clap::Error) -> Result<clap::Error, FileError> {
        let Some(file) = &self.file else {
            return Ok(err);
        };
        let culprit = match err.get(clap::error::ContextKind::InvalidArg) {
            Some(clap::error::ContextValue::String(s)) => s.clone(),
            _ => return Ok(err),
        };
        // clap names the argument as "--long <VALUE>".
        let long = culprit
            .trim_start_matches("--")
            .split([' ', '='])
            .next()
            .unwrap_or_default();
        match self.from_file.iter().find(|(l, _)| l == long) {
            Some((_, key)) => {
                let rendered = err.render().to_string();
                let message = rendered
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_owned();
                Err(FileError::Value {
                    file: file.clone(),
                    key: key.clone(),
                    message,
                })
            }
            None => Ok(err),
        }
    }

    /// The file the settings came from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

/// The arguments a file may set: every long flag but `--config`, `--help`, `--version`.
fn settable(sub: &Command) -> impl Iterator<Item = &Arg> {
    sub.get_arguments().filter(|a| {
        a.get_long().is_some() && !matches!(a.get_id().as_str(), "config" | "help" | "version")
    })
}

/// A flag's key: its long name in snake_case.
fn key_of(arg: &Arg) -> String {
    arg.get_long().unwrap_or_default().replace('-', "_")
}

fn unknown_key(file: &Path, sub: &Command, key: &str) -> FileError {
    let known: Vec<String> = settable(sub)
        .filter(|a| !a.is_hide_set())
        .map(key_of)
        .collect();
    let snake = key.replace('-', "_");
    let hint = if snake != key && settable(sub).any(|a| key_of(a) == snake) {
        format!(" (keys are snake_case: did you mean `{snake}`?)")
    } else {
        String::new()
    };
    FileError::UnknownKey {
        file: file.to_owned(),
        key: key.to_owned(),
        command: sub.get_name().to_owned(),
        hint,
        known: known.join(", "),
    }
}

/// A TOML value as the text its flag would be given.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(_) => Err("expected one value, got a list".to_owned()),
        toml::Value::Table(_) => Err("expected a value, got a table".to_owned()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
    }
}

/// The value of `--config FILE` / `--config=FILE` among a subcommand's arguments.
fn config_path(rest: &[OsString]) -> Option<PathBuf> {
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            return None;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// Ids of the arguments the command line gives (by long name or alias).
fn given_flags<'a>(sub: &'a Command, rest: &[OsString]) -> BTreeSet<&'a str> {
    let mut given = BTreeSet::new();
    for a in rest
        .iter()
        .map(OsString::as_os_str)
        .map(OsStr::to_string_lossy)
    {
        if a == "--" {
            break;
        }
        let Some(name) = a.strip_prefix("--") else {
            continue;
        };
        let name = name.split('=').next().unwrap_or_default();
        if let Some(arg) = sub.get_arguments().find(|arg| {
            arg.get_long() == Some(name)
                || arg.get_all_aliases().is_some_and(|al| al.contains(&name))
        }) {
            given.insert(arg.get_id().as_str());
        }
    }
    given
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        Relay {
            #[arg(long)]
            config: Option<PathBuf>,
            #[arg(long)]
            stream: String,
            #[arg(long)]
            http: Option<std::net::SocketAddr>,
            #[arg(long)]
            upload_mbps: Option<f64>,
            #[arg(long)]
            bootstrap: Vec<String>,
            #[arg(long)]
            no_mdns: bool,
        },
        Other {
            #[arg(long)]
            stream: String,
        },
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("treecast-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn run(args: &[&str]) -> Result<Cli, String> {
        let args = args.iter().map(OsString::from).collect();
        let merged = merge(&Cli::command(), args).map_err(|e| e.to_string())?;
        Cli::try_parse_from(&merged.args).map_err(|e| match merged.explain(e) {
            Ok(e) => e.to_string(),
            Err(e) => e.to_string(),
        })
    }

    const GOOD: &str = r#"
        stream = "demo"
        http = "0.0.0.0:8081"
        upload_mbps = 20
        bootstrap = ["/ip4/10.0.0.1/tcp/4001", "/ip4/10.0.0.2/tcp/4001"]
        no_mdns = true
    "#;

    #[test]
    fn the_file_fills_in_flags() {
        let f = write("good.toml", GOOD);
        let cli = run(&["treecast", "relay", "--config", f.to_str().expect("utf-8")]).expect("ok");
        let Sub::Relay {
            stream,
            http,
            upload_mbps,
            bootstrap,
            no_mdns,
            ..
        } = cli.command
        else {
            panic!("relay");
        };
        assert_eq!(stream, "demo");
        assert_eq!(http, Some("0.0.0.0:8081".parse().expect("addr")));
        assert_eq!(upload_mbps, Some(20.0));
        assert_eq!(bootstrap.len(), 2);
        assert!(no_mdns);
    }

    #[test]
    fn the_command_line_overrides_the_file() {
        let f = write("override.toml", GOOD);
        let path = f.to_str().expect("utf-8");
        let cli = run(&[
            "treecast",
            "relay",
            "--upload-mbps=5",
            "--config",
            path,
            "--bootstrap",
            "/ip4/10.0.0.9/tcp/1",
        ])
        .expect("ok");
        let Sub::Relay {
            upload_mbps,
            bootstrap,
            stream,
            ..
        } = cli.command
        else {
            panic!("relay");
        };
        assert_eq!(upload_mbps, Some(5.0));
        assert_eq!(
            bootstrap,
            ["/ip4/10.0.0.9/tcp/1"],
            "a list is replaced, not extended"
        );
        assert_eq!(stream, "demo", "keys not on the command line still apply");
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let unknown = write("unknown.toml", "stream = \"s\"\nuplod_mbps = 3\n");
        let err = run(&[
            "treecast",
            "relay",
            "--config",
            unknown.to_str().expect("utf-8"),
        ])
        .expect_err("unknown key");
        assert!(
            err.contains("unknown.toml") && err.contains("`uplod_mbps`"),
            "{err}"
        );
        assert!(err.contains("upload_mbps"), "lists the known keys: {err}");

        let kebab = write("kebab.toml", "stream = \"s\"\nupload-mbps = 3\n");
        let err = run(&[
            "treecast",
            "relay",
            "--config",
            kebab.to_str().expect("utf-8"),
        ])
        .expect_err("kebab key");
        assert!(err.contains("did you mean `upload_mbps`"), "{err}");

        let bad = write("bad.toml", "stream = \"s\"\nhttp = \"nowhere\"\n");
        let err = run(&[
            "treecast",
            "relay",
            "--config",
            bad.to_str().expect("utf-8"),
        ])
        .expect_err("bad value");
        assert!(
            err.contains("bad.toml") && err.contains("key `http`"),
            "{err}"
        );

        let flag = write("flag.toml", "stream = \"s\"\nno_mdns = \"yes\"\n");
        let err = run(&[
            "treecast",
            "relay",
            "--config",
            flag.to_str().expect("utf-8"),
        ])
        .expect_err("bad flag");
        assert!(
            err.contains("key `no_mdns`: expected true or false"),
            "{err}"
        );

        let toml = write("broken.toml", "stream = \n");
        let err = run(&[
            "treecast",
            "relay",
            "--config",
            toml.to_str().expect("utf-8"),
        ])
        .expect_err("bad toml");
        assert!(err.contains("broken.toml is not valid TOML"), "{err}");

        let err =
            run(&["treecast", "relay", "--config", "/nonexistent/x.toml"]).expect_err("missing");
        assert!(
            err.contains("cannot read config file /nonexistent/x.toml"),
            "{err}"
        );

        // A bad value on the command line stays clap's own message.
        let f = write("cli-bad.toml", GOOD);
        let err = run(&[
            "treecast",
            "relay",
            "--config",
            f.to_str().expect("utf-8"),
            "--http",
            "x",
        ])
        .expect_err("bad flag value");
        assert!(
            err.contains("--http") && !err.contains("cli-bad.toml"),
            "{err}"
        );
    }

    #[test]
    fn commands_without_config_are_untouched() {
        let args: Vec<OsString> = ["treecast", "other", "--stream", "s"]
            .iter()
            .map(OsString::from)
            .collect();
        let merged = merge(&Cli::command(), args.clone()).expect("no file");
        assert_eq!(merged.args, args);
    }
}
