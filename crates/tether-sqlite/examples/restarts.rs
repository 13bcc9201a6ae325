//! A token-merge server and two clients in one process, each a `Peer` on its own SQLite
//! file, wired in memory (no sockets). Each is killed and started again from its file (or
//! without it, or from an older copy), and the example prints what each restart reports:
//! the sessions restored, the connection outcome, the continuity each side is told.
//!
//! ```sh
//! cargo run -p tether-sqlite --example restarts
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use support::{Start, World};
use tether::sync::journal::Continuity;
use tether::Duration;

fn told(c: &[Continuity]) -> String {
    let names: Vec<&str> = c
        .iter()
        .map(|c| match c {
            Continuity::Start => "Start",
            Continuity::UpToDate { .. } => "UpToDate",
            Continuity::CatchUp { .. } => "CatchUp",
            Continuity::Diverged { .. } => "Diverged",
            Continuity::Rebuilt { .. } => "Rebuilt",
        })
        .collect();
    names.join(", ")
}

fn report(w: &World, what: &str, restored: usize) {
    println!("== {what}: {restored} session(s) restored from the file");
    for c in &w.clients {
        println!(
            "   {}: up {:?}, ended {:?}, told [{}]",
            c.name,
            c.ups(),
            c.ended(),
            told(&c.continuity())
        );
    }
    println!(
        "   server: ended {:?}, told [{}]",
        w.server.ended(),
        told(&w.server.continuity())
    );
    let twice = std::iter::once(w.server.applied())
        .chain(w.clients.iter().map(|c| c.applied()))
        .flat_map(|a| a.into_values())
        .filter(|&n| n > 1)
        .count();
    println!(
        "   journals equal: {}, {} entries each, applied twice: {twice}",
        w.converged(),
        w.server.keys().len()
    );
    assert!(w.converged() && twice == 0, "{what}: not settled");
}

fn main() {
    let mut w = World::new("example", 2);
    w.run(Duration::from_secs(2));
    for node in 0..3 {
        w.append(node, 10);
    }
    w.run(Duration::from_secs(5));
    w.clear_events();

    let steps: [(&str, Option<usize>, Start); 5] = [
        ("the server restarts with its file", None, Start::WithFile),
        ("client0 restarts with its file", Some(0), Start::WithFile),
        (
            "client1 restarts wiped (new file, new epoch)",
            Some(1),
            Start::Wiped,
        ),
        (
            "the server restarts from an older copy",
            None,
            Start::OlderCopy,
        ),
        (
            "both clients restart with their files",
            Some(2),
            Start::WithFile,
        ),
    ];
    for (what, who, how) in steps {
        if how == Start::OlderCopy {
            w.copy_file(0);
            w.append(0, 4);
            w.append(1, 4);
            w.run(Duration::from_secs(5));
        }
        w.clear_events();
        let restored = match who {
            None => w.restart_server(how).sessions.len(),
            Some(2) => {
                w.restart_client(0, how).sessions.len() + {
                    // Client 1 dies in the same instant (its events start over with it).
                    let r = w.restart_client(1, how);
                    r.sessions.len()
                }
            }
            Some(k) => w.restart_client(k, how).sessions.len(),
        };
        // Everyone goes on appending while the restarted node is away.
        for node in 0..3 {
            w.append(node, 3);
        }
        w.run(Duration::from_secs(20));
        report(&w, what, restored);
    }
}
