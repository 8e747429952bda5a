//! A private `redis-server` on a free port, for the tests of the shared token store.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Redis { child: Self::spawn(port, &[]), port }
    }

    /// A replica of `primary`, once its replication link is up.
    pub fn start_replica_of(primary: &Redis) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let replica =
            Redis { child: Self::spawn(port, &["--replicaof", "127.0.0.1", &primary.port.to_string()]), port };
        let t0 = Instant::now();
        while !replica.cli(&["INFO", "replication"]).contains("master_link_status:up") {
            assert!(t0.elapsed() < Duration::from_secs(10), "the replica did not connect");
            std::thread::sleep(Duration::from_millis(20));
        }
        replica
    }

    /// Kills this Redis and starts an empty one on the same port (a restart without persistence).
    pub fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, &[]);
    }

    /// Runs in a folder of its own under the system's temporary folder: a replica's full sync
    /// writes the primary's data set to a file there, never into the working tree.
    fn spawn(port: u16, more: &[&str]) -> Child {
        let dir = std::env::temp_dir().join(format!("bearerd-redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(more)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    pub fn signal(&self, sig: &str) {
        assert!(Command::new("kill").arg(sig).arg(self.child.id().to_string()).status().unwrap().success());
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("bearerd-redis-{}", self.port)));
    }
}
