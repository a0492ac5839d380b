//! The README's option tables are generated from the clap definitions, so docs and code cannot
//! drift: this test fails when they differ. `RTIS_BLESS=1 cargo test --test docs` rewrites them.
use clap::CommandFactory;

#[derive(clap::Parser)]
struct Producer {
    #[command(flatten)]
    c: rtis::config::ProducerConfig,
}

#[derive(clap::Parser)]
struct Consumer {
    #[command(flatten)]
    c: rtis::config::ConsumerConfig,
}

#[derive(clap::Parser)]
struct Admin {
    #[command(subcommand)]
    c: rtis::admin::AdminCommand,
}

fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A markdown table of a command's options: flag, env var, default, help.
fn table(cmd: &clap::Command) -> String {
    let mut out = String::from("| flag | env | default | meaning |\n|---|---|---|---|\n");
    for a in cmd.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let flag = match a.get_value_names() {
            Some(v) if a.get_action().takes_values() => format!("`--{long} {}`", v.join(" ")),
            _ if a.get_action().takes_values() => {
                format!("`--{long} {}`", a.get_id().as_str().to_uppercase())
            }
            _ => format!("`--{long}`"),
        };
        let flag = if a.is_hide_set() {
            "(env only)".to_string()
        } else {
            flag
        };
        let env = a
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let default: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let default = if a.is_required_set() {
            "(required)".to_string()
        } else if default.is_empty() {
            String::new()
        } else {
            format!("`{}`", default.join(","))
        };
        let help = a
            .get_long_help()
            .or(a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "| {flag} | {env} | {default} | {} |\n",
            cell(&help)
        ));
    }
    out
}

fn section(name: &str, body: &str) -> (String, String) {
    (
        format!("<!-- generated:{name} (tests/docs.rs) -->\n"),
        format!("{body}<!-- end:{name} -->"),
    )
}

#[test]
fn readme_option_tables_match_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let mut readme = std::fs::read_to_string(path).unwrap();
    let admin = Admin::command();
    let sub = |n: &str| admin.find_subcommand(n).unwrap().clone();
    let sections = [
        ("producer-options", table(&Producer::command())),
        ("consumer-options", table(&Consumer::command())),
        ("status-options", table(&sub("status"))),
        ("reset-options", table(&sub("reset"))),
    ];
    let bless = std::env::var_os("RTIS_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, body) in sections {
        let (start, end_body) = section(name, &body);
        let end = format!("<!-- end:{name} -->");
        let s = readme
            .find(&start)
            .unwrap_or_else(|| panic!("README.md lacks the marker {start:?}"));
        let e = readme[s..].find(&end).expect("end marker") + s + end.len();
        let want = format!("{start}{end_body}");
        if readme[s..e] != want {
            stale.push(name);
            readme.replace_range(s..e, &want);
        }
    }
    if bless {
        std::fs::write(path, readme).unwrap();
    } else {
        assert!(
            stale.is_empty(),
            "README.md option tables {stale:?} differ from the clap definitions; run \
             `RTIS_BLESS=1 cargo test --test docs` and commit the result"
        );
    }
}
