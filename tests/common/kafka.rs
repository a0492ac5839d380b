//! Apache Kafka for the tests, the demo's twin and the benchmark: KRaft brokers started from the
//! jars `.ci/install.sh` caches (`~/.cache/rtis/kafka-<version>/lib`, or `RTIS_KAFKA_LIB`).
//!
//! * [`Broker::shared`]: one single-node broker per test process, for the tests that do not kill
//!   or pause it (they use unique topics and groups);
//! * [`Broker::start`]: a single node of a test's own, which it may kill -9, restart or pause;
//! * [`Broker::cluster`]: three combined broker+controller nodes (static voters, one cluster id),
//!   internal topics at RF 3 with `min.insync.replicas=2`, for replication faults: kill -9,
//!   restart or SIGSTOP one node, find a partition's leader or a follower.
//!
//! Every node is started by one long-lived spawner thread with `PR_SET_PDEATHSIG = SIGKILL`, so
//! a broker never outlives the test process (even one killed with -9), and a test's nodes are
//! killed by PID when the [`Broker`] is dropped (also on panic). The shared broker is killed and
//! its directory removed when the process exits.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::free_port;

/// The directory holding the broker's jars.
pub fn kafka_lib() -> PathBuf {
    if let Ok(p) = std::env::var("RTIS_KAFKA_LIB") {
        if Path::new(&p).is_dir() {
            return PathBuf::from(p);
        }
    }
    let pom = include_str!("../../.ci/kafka/pom.xml");
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("kafka.version in .ci/kafka/pom.xml");
    let lib = super::cache_dir().join(format!("kafka-{version}/lib"));
    assert!(
        lib.join(".complete").is_file(),
        "Apache Kafka {version} is not installed in {}: run `bash .ci/install.sh` first",
        lib.display()
    );
    lib
}

/// The java launcher: `$JAVA_HOME/bin/java`, else `java` on the PATH.
fn java() -> PathBuf {
    std::env::var("JAVA_HOME")
        .ok()
        .map(|h| PathBuf::from(h).join("bin/java"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("java"))
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as the process, with the parent-death signal
/// set: the kernel kills the child when this process dies (the signal follows the *thread*
/// that forked, so it must never be a test's or a blocking pool's thread, which come and go).
pub fn spawn_owned(mut cmd: Command) -> Child {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("rtis-test-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    use std::os::unix::process::CommandExt;
                    // SAFETY: prctl is async-signal-safe; it only sets a flag of the child
                    unsafe {
                        cmd.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply, rx) = mpsc::channel();
    cmd.stdin(Stdio::null());
    tx.lock().unwrap().send((cmd, reply)).expect("spawner");
    rx.recv()
        .expect("spawner")
        .expect("spawning a test service")
}

const LOG4J: &str = "status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.ready.name = kafka.server.KafkaRaftServer
logger.ready.level = INFO
";

/// The line a node logs once it serves requests.
const READY: &str = "Kafka Server started";

/// One KRaft node (broker and controller in one process).
struct Node {
    id: u32,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Length of the log when the current process was started (its ready line comes after).
    log_mark: u64,
}

impl Node {
    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn spawn(&mut self, lib: &Path) {
        let log = self.log();
        self.log_mark = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(java());
        cmd.args([
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
        ])
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            self.dir.join("log4j2.properties").display()
        ))
        // the JVM's temp files (lz4/snappy native libraries) stay in the node's dir, removed
        // with it, instead of piling up in /tmp
        .arg(format!("-Djava.io.tmpdir={}", self.dir.display()))
        .arg("-cp")
        .arg(format!("{}/*", lib.display()))
        .arg("kafka.Kafka")
        .arg(self.dir.join("server.properties"))
        .stdout(logf.try_clone().unwrap())
        .stderr(logf);
        self.child = Some(spawn_owned(cmd));
    }

    /// Whether the current process logged its ready line; panics when it exited.
    fn ready(&mut self) -> bool {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!(
                    "Kafka node {} exited ({status}) while starting; log:\n{}",
                    self.id,
                    self.tail()
                );
            }
        }
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log()) {
            use std::io::Seek;
            let _ = f.seek(std::io::SeekFrom::Start(self.log_mark));
            let _ = f.read_to_string(&mut text);
        }
        text.contains(READY)
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: a signal to our own child's PID
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }
}

/// A private Apache Kafka cluster of one or three KRaft nodes on 127.0.0.1.
pub struct Broker {
    pub dir: tempfile::TempDir,
    nodes: Vec<Node>,
    lib: PathBuf,
}

impl Broker {
    /// A single node of the caller's own (it may kill, restart or pause it).
    pub fn start() -> Self {
        Self::with_nodes(1)
    }

    /// Three nodes: RF 3 and `min.insync.replicas=2` for the internal topics.
    pub fn cluster() -> Self {
        Self::with_nodes(3)
    }

    /// The single node shared by the tests of this process that do not kill or pause it.
    pub fn shared() -> &'static Broker {
        static SHARED: OnceLock<Broker> = OnceLock::new();
        SHARED.get_or_init(|| Self::for_process(1))
    }

    /// A three-node cluster shared by the tests of this process that do not kill or pause
    /// its nodes.
    pub fn shared_cluster() -> &'static Broker {
        static SHARED: OnceLock<Broker> = OnceLock::new();
        SHARED.get_or_init(|| Self::for_process(3))
    }

    /// Nodes that live as long as the test process: stopped by an `atexit` hook (statics are
    /// never dropped).
    fn for_process(n: u32) -> Self {
        let b = Self::with_nodes(n);
        let pids: Vec<i32> = b
            .nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(|c| c.id() as i32))
            .collect();
        let mut g = SHARED_CLEANUP.lock().unwrap();
        if g.is_empty() {
            extern "C" fn cleanup() {
                if let Ok(mut g) = SHARED_CLEANUP.lock() {
                    for (pids, dir) in g.drain(..) {
                        for p in pids {
                            // SAFETY: our own child
                            unsafe { libc::kill(p, libc::SIGKILL) };
                        }
                        let _ = std::fs::remove_dir_all(dir);
                    }
                }
            }
            // SAFETY: registering a plain function
            unsafe { libc::atexit(cleanup) };
        }
        g.push((pids, b.dir.path().to_path_buf()));
        drop(g);
        b
    }

    fn with_nodes(n: u32) -> Self {
        let lib = kafka_lib();
        let dir = tempfile::Builder::new()
            .prefix("rtis-kafka")
            .tempdir()
            .unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let rf = n.min(3);
        let min_isr = rf.min(2);
        // 22 characters of base64url: a fresh cluster id
        let cluster_id: String = {
            use base64::Engine;
            let bytes: [u8; 16] = rand::random();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        let mut nodes = Vec::new();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let id = i as u32 + 1;
            let ndir = dir.path().join(format!("node{id}"));
            std::fs::create_dir_all(&ndir).unwrap();
            let props = format!(
                "process.roles=broker,controller
node.id={id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=5
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={min_isr}
default.replication.factor={rf}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
unclean.leader.election.enable=false
log.cleaner.dedupe.buffer.size=16777216
log.cleaner.threads=1
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
",
                data = ndir.join("data").display()
            );
            std::fs::write(ndir.join("server.properties"), props).unwrap();
            std::fs::write(ndir.join("log4j2.properties"), LOG4J).unwrap();
            nodes.push(Node {
                id,
                port: *port,
                dir: ndir,
                child: None,
                log_mark: 0,
            });
        }
        // format every node's storage (in parallel: one JVM start each)
        let formats: Vec<_> = nodes
            .iter()
            .map(|node| {
                let mut cmd = Command::new(java());
                cmd.arg("-cp")
                    .arg(format!("{}/*", lib.display()))
                    // `=` form: a random cluster id may start with '-'
                    .args(["kafka.tools.StorageTool", "format", "--ignore-formatted"])
                    .arg(format!("--cluster-id={cluster_id}"))
                    .arg("-c")
                    .arg(node.dir.join("server.properties"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                (node.id, cmd.spawn().expect("java (StorageTool format)"))
            })
            .collect();
        for (id, child) in formats {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "formatting Kafka node {id} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut b = Self { dir, nodes, lib };
        for i in 0..b.nodes.len() {
            let lib = b.lib.clone();
            b.nodes[i].spawn(&lib);
        }
        b.wait_ready(&(1..=n).collect::<Vec<_>>());
        b
    }

    /// Waits until the given nodes logged their ready line and the cluster's metadata lists
    /// every node.
    fn wait_ready(&mut self, ids: &[u32]) {
        let deadline = Instant::now() + Duration::from_secs(90);
        for &id in ids {
            let node = &mut self.nodes[id as usize - 1];
            while !node.ready() {
                if Instant::now() > deadline {
                    panic!(
                        "Kafka node {id} did not start within 90 s; log:\n{}",
                        node.tail()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let want = self.nodes.len();
        while self.brokers_in_metadata() != Some(want) {
            if Instant::now() > deadline {
                panic!("the Kafka cluster does not list its {want} nodes within 90 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn brokers_in_metadata(&self) -> Option<usize> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = rtis::config::kafka_client_config(&self.bootstrap(), &[])
            .ok()?
            .create()
            .ok()?;
        let md = c.fetch_metadata(None, Duration::from_secs(5)).ok()?;
        Some(md.brokers().len())
    }

    /// Bootstrap servers of every node.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Number of nodes.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The process id of node 1 (for CPU accounting), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.nodes[0].child.as_ref().map(Child::id)
    }

    /// Log of node `id` (1-based).
    pub fn log_of(&self, id: u32) -> String {
        std::fs::read_to_string(self.nodes[id as usize - 1].log()).unwrap_or_default()
    }

    /// SIGKILL every node, as a crash would.
    pub fn kill9(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
    }

    /// Starts every node again on the same ports and data (after [`kill9`](Self::kill9)).
    pub fn restart(&mut self) {
        self.kill9();
        for i in 0..self.nodes.len() {
            let lib = self.lib.clone();
            self.nodes[i].spawn(&lib);
        }
        let ids: Vec<u32> = self.nodes.iter().map(|n| n.id).collect();
        self.wait_ready(&ids);
    }

    /// SIGSTOP / SIGCONT every node.
    pub fn pause(&self, on: bool) {
        for n in &self.nodes {
            n.signal(if on { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// SIGKILL node `id` (1-based).
    pub fn kill9_node(&mut self, id: u32) {
        self.nodes[id as usize - 1].kill9();
    }

    /// Starts node `id` again; returns once it is back in the cluster.
    pub fn restart_node(&mut self, id: u32) {
        let lib = self.lib.clone();
        let node = &mut self.nodes[id as usize - 1];
        node.kill9();
        node.spawn(&lib);
        self.wait_ready(&[id]);
    }

    /// Restarts several killed nodes at once (one alone may not find a controller quorum),
    /// then waits until all are ready.
    pub fn restart_nodes(&mut self, ids: &[u32]) {
        let lib = self.lib.clone();
        for &id in ids {
            let node = &mut self.nodes[id as usize - 1];
            node.kill9();
            node.spawn(&lib);
        }
        self.wait_ready(ids);
    }

    /// SIGSTOP / SIGCONT node `id`.
    pub fn pause_node(&self, id: u32, on: bool) {
        self.nodes[id as usize - 1].signal(if on { libc::SIGSTOP } else { libc::SIGCONT });
    }

    /// Leader, replicas and in-sync replicas (node ids) of a partition, from the metadata of
    /// any node that answers.
    pub fn partition_info(&self, topic: &str, partition: i32) -> Option<(i32, Vec<i32>, Vec<i32>)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = rtis::config::kafka_client_config(&self.bootstrap(), &[])
            .ok()?
            .create()
            .ok()?;
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
        let t = md.topics().iter().find(|t| t.name() == topic)?;
        let p = t.partitions().iter().find(|p| p.id() == partition)?;
        Some((p.leader(), p.replicas().to_vec(), p.isr().to_vec()))
    }

    /// The current leader of a partition (a node id), once one is elected.
    pub fn leader(&self, topic: &str, partition: i32) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((leader, _, _)) = self.partition_info(topic, partition) {
                if leader > 0 {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader for {topic}/{partition} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

static SHARED_CLEANUP: Mutex<Vec<(Vec<i32>, PathBuf)>> = Mutex::new(Vec::new());

impl Drop for Broker {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.signal(libc::SIGCONT);
            n.kill9();
        }
    }
}

/// Counts the committed records of a topic (transaction markers and aborted records occupy
/// offsets, so end offsets do not count records), reading on from where the last count ended.
pub struct TopicCounter {
    consumer: rdkafka::consumer::BaseConsumer,
    /// Per partition: offsets of the committed records seen so far.
    pub offsets: Vec<Vec<i64>>,
    /// Per partition: whether its end was reported after its last record.
    at_end: Vec<bool>,
}

impl TopicCounter {
    /// A counter over every partition of `topic` (which must exist).
    pub fn new(bootstrap: &str, topic: &str) -> Self {
        use rdkafka::consumer::Consumer;
        let n = rtis::kafka::partition_count(bootstrap, &[], topic)
            .unwrap()
            .unwrap_or_else(|| panic!("topic {topic} does not exist"));
        let consumer: rdkafka::consumer::BaseConsumer =
            rtis::config::kafka_client_config(bootstrap, &[])
                .unwrap()
                .set("group.id", "rtis-test-counter")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .set("fetch.wait.max.ms", "10")
                .set("isolation.level", "read_committed")
                .create()
                .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..n {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Self {
            consumer,
            offsets: vec![Vec::new(); n as usize],
            at_end: vec![false; n as usize],
        }
    }

    /// Reads what arrived since the last call (until every partition reported its end, at most
    /// `budget`); returns the committed records counted so far.
    pub fn refresh(&mut self, budget: Duration) -> i64 {
        use rdkafka::Message;
        let deadline = Instant::now() + budget;
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let p = m.partition() as usize;
                    self.at_end[p] = false;
                    self.offsets[p].push(m.offset());
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    self.at_end[p as usize] = true;
                }
                Some(Err(_)) => {}
                // nothing buffered: done once every partition is known to be at its end
                None if self.at_end.iter().all(|e| *e) => break,
                None => {}
            }
        }
        self.total()
    }

    pub fn total(&self) -> i64 {
        self.offsets.iter().map(|o| o.len() as i64).sum()
    }
}
