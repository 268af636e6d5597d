//! The words a newcomer reads first agree with the code: the README's count of crates, the
//! `orchestrator` binary's modes in its help and in the operations guide, and every participant's
//! worker wherever the docs list the workers (its binary, the commands it takes, liveness, compose).

use std::{collections::BTreeSet, path::Path, process::Command};

use platform::contract::Role;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// A count as the README spells it at the start of a sentence.
fn spelled(n: usize) -> &'static str {
    ["None", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"]
        .get(n)
        .copied()
        .unwrap_or_else(|| panic!("spell {n}"))
}

#[test]
fn the_readme_counts_the_crates_the_workspace_has() {
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find_map(|line| line.strip_prefix("members = "))
        .expect("the workspace lists its members on one line");
    let count = members.matches('"').count() / 2;
    let readme = read("README.md");
    let said = format!("{} crates,", spelled(count));
    assert!(readme.contains(&said), "the workspace has {count} crates; the README should say {said:?}");
}

#[test]
fn the_modes_in_the_help_are_the_modes_the_guide_lists() {
    let help = Command::new(env!("CARGO_BIN_EXE_orchestrator")).arg("--help").output().expect("it runs");
    let help = String::from_utf8(help.stdout).unwrap();
    let usage = help.lines().next().expect("a usage line");
    let modes: BTreeSet<&str> =
        usage.trim_start_matches("usage: orchestrator <").trim_end_matches('>').split(" | ").collect();
    let guide = read("docs/operations.md");
    let listed: BTreeSet<&str> = guide
        .lines()
        .skip_while(|line| !line.starts_with("| mode | what runs |"))
        .skip(2)
        .take_while(|line| line.starts_with("| `"))
        .map(|line| line.trim_start_matches("| `").split('`').next().unwrap())
        .collect();
    assert_eq!(listed, modes, "docs/operations.md's mode table against `orchestrator --help`");
}

#[test]
fn every_participants_worker_is_where_the_docs_list_the_workers() {
    let registry = sagas::registry();
    let guide = read("docs/operations.md");
    let compose = read("docker-compose.yml");
    let liveness = guide.split("**Liveness.**").nth(1).expect("the guide explains liveness");
    let liveness = liveness.split("\n\n").next().unwrap();
    let declared: BTreeSet<&str> = participants::WORKERS.iter().map(|worker| worker.participant.name).collect();
    let needed: BTreeSet<&str> = registry.participants().iter().map(|participant| participant.name).collect();
    assert_eq!(declared, needed, "a worker for every participant the kinds declare, and no other");
    for name in declared {
        let binary = format!("{name}-worker");
        let source = format!("participants/src/bin/{binary}.rs");
        assert!(read(&source).contains("run_worker"), "{source} runs the worker");
        let line = guide
            .lines()
            .find(|line| line.contains(&format!("--bin {binary} ")))
            .unwrap_or_else(|| panic!("docs/operations.md lists no `--bin {binary}`"));
        // The commands the guide says it takes are those the kinds route to it.
        let taken: BTreeSet<String> =
            line.split('#').nth(1).unwrap_or_default().split(',').map(|t| t.trim().to_owned()).collect();
        let mut generator = platform::contract::generator();
        let routed: BTreeSet<String> = registry
            .kinds()
            .into_iter()
            .flat_map(|kind| registry.driver(kind).unwrap().messages(&mut generator))
            .filter(|message| message.role == Role::Command && message.example.routing_key == name)
            .map(|message| message.example.message_type)
            .collect();
        assert_eq!(taken, routed, "the commands docs/operations.md says {binary} takes");
        assert!(liveness.contains(&format!("`{name}`")), "liveness in docs/operations.md does not name {name}");
        assert!(compose.contains(&format!("  {binary}:\n")), "docker-compose.yml has no {binary} service");
    }
}
