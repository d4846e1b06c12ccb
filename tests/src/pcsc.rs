//! Smartcards for the tests: a private pcscd with vpcd's virtual readers, virtual PIV cards
//! (`rolegate-test-piv-card`) inserted into them, and test certificates made with `openssl`.
//!
//! pcscd's socket path is fixed (`/run/pcscd/pcscd.comm`), so only one runs per machine: every
//! test that needs it holds [`PcscLock`] (an `flock` on `/tmp/rolegate-pcscd.lock`) for its
//! whole run, which serialises the smartcard tests across nextest's processes. vpcd listens on
//! 0.0.0.0:35963/35964: pcscd runs in a private network namespace so those ports are not on
//! the real network; a card joins that namespace with `nsenter`. Programs outside still reach
//! pcscd through its Unix socket. Needs root (namespaces) and the packages pcscd,
//! vsmartcard-vpcd, opensc and iproute2 (`scripts/test` installs them).

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The lock file that serialises pcscd's users across test processes.
const LOCK_PATH: &str = "/tmp/rolegate-pcscd.lock";
/// pcscd's socket.
const SOCKET: &str = "/run/pcscd/pcscd.comm";
/// pcscd's pid file.
const PID_FILE: &str = "/run/pcscd/pcscd.pid";

/// The names of vpcd's two readers, by slot.
pub const READERS: [&str; 2] = ["Virtual PCD 00 00", "Virtual PCD 00 01"];

/// The process-wide (and machine-wide) right to run pcscd: an exclusive `flock`, released on drop.
pub struct PcscLock {
    _fd: OwnedFd,
}

impl PcscLock {
    /// Waits (at most 10 minutes: the other smartcard tests run meanwhile) for the lock.
    pub fn acquire() -> PcscLock {
        let path = CString::new(LOCK_PATH).unwrap_or_default();
        // SAFETY: `path` is a valid NUL-terminated string; the result is checked.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
                0o600,
            )
        };
        assert!(
            fd >= 0,
            "open {LOCK_PATH}: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            // SAFETY: `fd` is an open descriptor.
            let r = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{LOCK_PATH} held by another test for 10 minutes"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PcscLock { _fd: fd }
    }
}

/// Puts a spawned process in its own process group and kills it when the test's thread ends
/// (a test killed by its runner leaves no pcscd or card behind).
fn own_group_and_die_with_parent(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (setpgid, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Stops a child started by [`own_group_and_die_with_parent`]: SIGTERM to its group, then
/// SIGKILL after `grace`.
fn stop_group(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pgid = child.id() as libc::pid_t;
    // SAFETY: signals the child's own process group (its pid: setpgid(0, 0)).
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
}

/// A private pcscd with vpcd's readers (or none), stopped on drop.
pub struct Pcscd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    _lock: PcscLock,
}

impl Pcscd {
    /// Starts pcscd with vpcd's two readers ([`READERS`]) in a private network namespace.
    pub fn start() -> Pcscd {
        Pcscd::start_with(true)
    }

    /// Starts pcscd with no reader at all (an empty reader configuration).
    pub fn start_without_readers() -> Pcscd {
        Pcscd::start_with(false)
    }

    fn start_with(readers: bool) -> Pcscd {
        let lock = PcscLock::acquire();
        if let Some(pid) = running_pcscd() {
            panic!(
                "a pcscd (pid {pid}) is already running outside the tests; stop it: the smartcard \
                 tests start their own"
            );
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let log = std::fs::File::create(dir.path().join("pcscd.log"))
            .unwrap_or_else(|e| panic!("pcscd log: {e}"));
        let log2 = log.try_clone().unwrap_or_else(|e| panic!("pcscd log: {e}"));
        let config = if readers {
            String::new()
        } else {
            let empty = dir.path().join("reader.conf.d");
            std::fs::create_dir(&empty).unwrap_or_else(|e| panic!("mkdir: {e}"));
            format!(" -c '{}'", empty.display())
        };
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-n",
            "sh",
            "-c",
            &format!("ip link set lo up && exec pcscd -f -a{config}"),
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
        own_group_and_die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start pcscd (unshare -n … pcscd; needs root and pcscd installed): {e}")
        });
        let mut pcscd = Pcscd {
            child: Some(child),
            dir,
            _lock: lock,
        };
        pcscd.wait_ready(readers);
        pcscd
    }

    fn wait_ready(&mut self, readers: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("pcscd exited at start ({status}): {}", self.log());
            }
            if Path::new(SOCKET).exists()
                && let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User)
            {
                let n = ctx.list_readers_owned().map(|r| r.len()).unwrap_or(0);
                if !readers || n == READERS.len() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "pcscd not ready within 10 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// pcscd's pid (the process in the private network namespace).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// What pcscd logged (APDUs included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pcscd.log")).unwrap_or_default()
    }

    /// Stops pcscd now (as its drop does), waiting until its socket is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_group(&mut c, Duration::from_secs(5));
        }
        // pcscd removes its socket on SIGTERM; after a SIGKILL it is left: remove it.
        let _ = std::fs::remove_file(SOCKET);
        let _ = std::fs::remove_file(PID_FILE);
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A pcscd already running (from its pid file), if any.
fn running_pcscd() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(PID_FILE)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // `/proc/<pid>/stat`: "pid (comm) state …"; a zombie (a pcscd killed with its test) is gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let running = stat.contains("(pcscd) ") && !stat.contains("(pcscd) Z");
    running.then_some(pid)
}

/// What a virtual card holds and how it behaves.
#[derive(Debug, Clone)]
pub struct CardSpec {
    /// The private key, PKCS#8 PEM (EC P-256, EC P-384 or RSA-2048).
    pub key_pem: PathBuf,
    /// The slot 9A certificate, DER or PEM.
    pub cert: PathBuf,
    /// The PIN.
    pub pin: String,
    /// The PIN's tries (3 when `None`).
    pub retries: Option<u8>,
    /// A file keeping the tries left across the card's restarts.
    pub state: Option<PathBuf>,
    /// Answer SELECT PIV with 6A82: a card that is no PIV card.
    pub not_piv: bool,
    /// Close the connection when GENERAL AUTHENTICATE arrives: pulled mid-signature.
    pub die_on_sign: bool,
    /// vpcd's slot: 0 (`Virtual PCD 00 00`) or 1 (`Virtual PCD 00 01`).
    pub slot: usize,
}

impl CardSpec {
    /// A well-behaved PIV card in slot 0 holding `cert`'s key, with PIN `pin`.
    pub fn new(cert: &CardCert, pin: &str) -> CardSpec {
        CardSpec {
            key_pem: cert.key_pem.clone(),
            cert: cert.cert_der.clone(),
            pin: pin.into(),
            retries: None,
            state: None,
            not_piv: false,
            die_on_sign: false,
            slot: 0,
        }
    }
}

/// The virtual card binary.
pub fn piv_card_bin() -> PathBuf {
    super::built("rolegate-test-piv-card")
}

/// A virtual card in one of vpcd's readers; removed on drop.
pub struct Card {
    child: Option<Child>,
    slot: usize,
}

impl Card {
    /// Inserts a card: starts the card process in pcscd's network namespace and waits (at
    /// most 10 s; it takes ~0.15 s) until pcscd shows a card in the reader.
    pub fn insert(pcscd: &Pcscd, spec: CardSpec) -> Card {
        assert!(spec.slot < READERS.len(), "vpcd has slots 0 and 1");
        let port = 35963 + spec.slot;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/proc/{}/ns/net", pcscd.pid()))
            .arg(piv_card_bin())
            .arg(format!("127.0.0.1:{port}"))
            .arg("--key")
            .arg(&spec.key_pem)
            .arg("--cert")
            .arg(&spec.cert)
            .arg("--pin")
            .arg(&spec.pin)
            .stdin(Stdio::null());
        if let Some(r) = spec.retries {
            cmd.arg("--retries").arg(r.to_string());
        }
        if let Some(s) = &spec.state {
            cmd.arg("--state").arg(s);
        }
        if spec.not_piv {
            cmd.arg("--not-piv");
        }
        if spec.die_on_sign {
            cmd.arg("--die-on-sign");
        }
        own_group_and_die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the virtual card: {e}"));
        let mut card = Card {
            child: Some(child),
            slot: spec.slot,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !card_present(READERS[spec.slot]) {
            if let Some(c) = card.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("the virtual card exited ({status}) before pcscd saw it");
            }
            assert!(
                Instant::now() < deadline,
                "no card in {} within 10 s of starting the virtual card",
                READERS[spec.slot]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        card
    }

    /// The reader the card is in.
    pub fn reader(&self) -> &'static str {
        READERS[self.slot]
    }

    /// Whether the card's process has exited (a `--die-on-sign` card after the signature).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Removes the card (closes its connection) and waits (at most 10 s) until pcscd sees
    /// the reader empty.
    pub fn remove(mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while card_present(READERS[self.slot]) {
            assert!(
                Instant::now() < deadline,
                "{} still holds a card 10 s after its removal",
                READERS[self.slot]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_group(&mut c, Duration::from_millis(0));
        }
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether pcscd shows a (powered-up or powerable) card in `reader`.
pub fn card_present(reader: &str) -> bool {
    let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User) else {
        return false;
    };
    let Ok(name) = CString::new(reader) else {
        return false;
    };
    let mut states = [pcsc::ReaderState::new(name, pcsc::State::UNAWARE)];
    if ctx
        .get_status_change(Duration::from_millis(0), &mut states)
        .is_err()
    {
        return false;
    }
    let s = states[0].event_state();
    s.contains(pcsc::State::PRESENT) && !s.contains(pcsc::State::MUTE)
}

/// The card key types the tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECC P-256 (PIV algorithm 11).
    P256,
    /// ECC P-384 (PIV algorithm 14).
    P384,
    /// RSA-2048 (PIV algorithm 07).
    Rsa2048,
}

/// Whether a card certificate allows signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// keyUsage = critical, digitalSignature (a PIV Authentication certificate).
    DigitalSignature,
    /// keyUsage = critical, nonRepudiation: present, without digitalSignature.
    WithoutDigitalSignature,
}

/// A test CA (P-256), made with the `openssl` command.
pub struct TestCa {
    dir: PathBuf,
    /// The CA's certificate, PEM.
    pub cert_pem: PathBuf,
    /// The CA's certificate, DER.
    pub cert_der: PathBuf,
    /// The CA's private key, PKCS#8 PEM.
    pub key_pem: PathBuf,
    serial: u32,
}

/// A card's key and certificate, issued by a [`TestCa`].
#[derive(Debug, Clone)]
pub struct CardCert {
    /// The card's private key, PKCS#8 PEM.
    pub key_pem: PathBuf,
    /// Its certificate, DER.
    pub cert_der: PathBuf,
    /// Its certificate, PEM.
    pub cert_pem: PathBuf,
    /// Its public key, SubjectPublicKeyInfo PEM.
    pub public_pem: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn genkey(kind: KeyType, out: &Path) {
    let o = s(out);
    match kind {
        KeyType::P256 => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            o,
        ]),
        KeyType::P384 => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            o,
        ]),
        KeyType::Rsa2048 => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            o,
        ]),
    }
}

impl TestCa {
    /// Makes a CA (`CN=<name>`) in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key_pem = dir.join(format!("{name}-ca.key"));
        let cert_pem = dir.join(format!("{name}-ca.pem"));
        let cert_der = dir.join(format!("{name}-ca.der"));
        genkey(KeyType::P256, &key_pem);
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            s(&key_pem),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            s(&cert_pem),
        ]);
        openssl(&[
            "x509",
            "-in",
            s(&cert_pem),
            "-outform",
            "DER",
            "-out",
            s(&cert_der),
        ]);
        TestCa {
            dir: dir.to_path_buf(),
            cert_pem,
            cert_der,
            key_pem,
            serial: 1,
        }
    }

    /// Issues a card certificate (`CN=<cn>`) for a new key of `kind`.
    pub fn issue(&mut self, cn: &str, kind: KeyType, usage: Usage) -> CardCert {
        self.serial += 1;
        let stem = self.dir.join(format!("{cn}-{}", self.serial));
        let p = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
        let (key_pem, csr, ext, cert_pem, cert_der, public_pem) = (
            p("key"),
            p("csr"),
            p("ext"),
            p("pem"),
            p("der"),
            p("pub.pem"),
        );
        genkey(kind, &key_pem);
        openssl(&[
            "req",
            "-new",
            "-key",
            s(&key_pem),
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            s(&csr),
        ]);
        let ku = match usage {
            Usage::DigitalSignature => "digitalSignature",
            Usage::WithoutDigitalSignature => "nonRepudiation",
        };
        std::fs::write(
            &ext,
            format!("keyUsage=critical,{ku}\nextendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n"),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", ext.display()));
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.cert_pem),
            "-CAkey",
            s(&self.key_pem),
            "-set_serial",
            &self.serial.to_string(),
            "-days",
            "30",
            "-extfile",
            s(&ext),
            "-out",
            s(&cert_pem),
        ]);
        openssl(&[
            "x509",
            "-in",
            s(&cert_pem),
            "-outform",
            "DER",
            "-out",
            s(&cert_der),
        ]);
        openssl(&[
            "x509",
            "-in",
            s(&cert_pem),
            "-pubkey",
            "-noout",
            "-out",
            s(&public_pem),
        ]);
        CardCert {
            key_pem,
            cert_der,
            cert_pem,
            public_pem,
        }
    }
}
