//! Every refusal of the loader, each with the message an admin reads.

use std::path::Path;
use std::time::Duration;

use rolegate::config::{Config, Isolation, PluginsConfig, ProviderConfig};
use rolegate::plugins::{Plugin, load_one};
use rolegate_e2e::{broken_c, hello_lib, rolegate_bin, write_private};
use rolegate_sdk::ErrorKind;

fn plugins() -> PluginsConfig {
    PluginsConfig {
        worker: Some(rolegate_bin()),
        ..Default::default()
    }
}

async fn open(path: &Path, pin: Option<&str>, isolation: Isolation) -> Result<(), String> {
    let plugin = Plugin::open(
        "p1",
        path,
        pin,
        isolation,
        Duration::from_secs(5),
        &plugins(),
    )
    .await
    .map_err(|e| e.to_string())?;
    plugin
        .instantiate(&serde_json::json!({}))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn refusal(path: &Path, isolation: Isolation) -> String {
    match open(path, None, isolation).await {
        Ok(()) => panic!("{} loaded ({isolation})", path.display()),
        Err(e) => e,
    }
}

const BOTH: [Isolation; 2] = [Isolation::InProcess, Isolation::Process];

#[tokio::test]
async fn a_missing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libnothere.so");
    for iso in BOTH {
        let e = refusal(&path, iso).await;
        assert_eq!(
            e,
            format!("provider `p1`: {}: file not found", path.display())
        );
    }
}

#[tokio::test]
async fn a_text_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libtext.so");
    std::fs::write(&path, "this is not a library\n").unwrap();
    for iso in BOTH {
        let e = refusal(&path, iso).await;
        assert_eq!(
            e,
            format!(
                "provider `p1`: {}: not a shared library (the file has no ELF header)",
                path.display()
            )
        );
    }
}

#[tokio::test]
async fn a_truncated_elf_file_is_refused_by_the_dynamic_loader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libtrunc.so");
    let bytes = std::fs::read(hello_lib()).unwrap();
    std::fs::write(&path, &bytes[..200]).unwrap();
    for iso in BOTH {
        let e = refusal(&path, iso).await;
        assert!(
            e.starts_with(&format!(
                "provider `p1`: {}: not a loadable shared library:",
                path.display()
            )),
            "{e}"
        );
        assert!(!e.contains("/proc/self/fd"), "{e}");
    }
}

#[tokio::test]
async fn a_library_without_the_entry_symbol_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = broken_c("no_entry.c", dir.path());
    for iso in BOTH {
        let e = refusal(&path, iso).await;
        assert_eq!(
            e,
            format!(
                "provider `p1`: {}: not a rolegate plugin: it does not export `rolegate_provider_v1`",
                path.display()
            ),
            "{iso}"
        );
    }
}

#[tokio::test]
async fn a_plugin_for_another_abi_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = broken_c("wrong_abi.c", dir.path());
    for iso in BOTH {
        let e = refusal(&path, iso).await;
        assert_eq!(
            e,
            format!(
                "provider `p1`: {}: the plugin speaks ABI v7; this host speaks ABI v1",
                path.display()
            )
        );
    }
    let path = broken_c("v2_only.c", dir.path());
    let e = refusal(&path, Isolation::InProcess).await;
    assert_eq!(
        e,
        format!(
            "provider `p1`: {}: it is a rolegate plugin for ABI v2 only; this host speaks ABI v1 (`rolegate_provider_v1`)",
            path.display()
        )
    );
}

#[tokio::test]
async fn a_short_or_null_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = broken_c("short_table.c", dir.path());
    let null = broken_c("null_table.c", dir.path());
    for iso in BOTH {
        let e = refusal(&short, iso).await;
        assert!(
            e.ends_with("the plugin's function table is 8 bytes, too short for ABI v1 (40 bytes)"),
            "{e}"
        );
        let e = refusal(&null, iso).await;
        assert!(e.ends_with("the entry symbol returned a null table"), "{e}");
    }
}

#[tokio::test]
async fn a_pin_mismatch_is_refused_and_a_match_loads() {
    let lib = hello_lib();
    let real = rolegate::plugins::library::sha256_file(&lib).unwrap();
    let wrong = "0".repeat(64);
    for iso in BOTH {
        let e = open(&lib, Some(&wrong), iso).await.unwrap_err();
        assert_eq!(
            e,
            format!(
                "provider `p1`: {}: its SHA-256 is {real} but the config pins {wrong}; refusing a library that is not the pinned one",
                lib.display()
            )
        );
        open(&lib, Some(&real.to_uppercase()), iso).await.unwrap();
    }
}

#[tokio::test]
async fn a_duplicate_provider_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        "[[provider]]\nid = \"otp\"\nlibrary = \"liba.so\"\nunpinned = true\n\n\
         [[provider]]\nid = \"otp\"\nlibrary = \"libb.so\"\nunpinned = true\n",
    );
    let e = Config::load(&cfg).unwrap_err().to_string();
    assert_eq!(
        e,
        "provider id `otp` is declared twice in the config (libraries liba.so and libb.so)"
    );
}

#[tokio::test]
async fn a_provider_that_rejects_its_settings_names_the_key() {
    for iso in BOTH {
        let p = ProviderConfig {
            sunset: None,
            id: "hello".into(),
            library: hello_lib(),
            sha256: None,
            unpinned: true,
            isolation: iso,
            deadline_ms: None,
            settings: toml_table("digitz = 6"),
        };
        let e = load_one(&p, &plugins()).await.unwrap_err();
        assert_eq!(e.provider_error().map(|e| e.kind), Some(ErrorKind::Config));
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "provider `hello`: {}: refused its settings: config: settings: unknown field `digitz`",
                hello_lib().display()
            )),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn a_config_loads_every_provider_and_relative_paths_follow_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libhello.so");
    std::fs::copy(hello_lib(), &lib).unwrap();
    let pin = rolegate::plugins::library::sha256_file(&lib).unwrap();
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[plugins]\nworker = \"{}\"\n\n\
             [[provider]]\nid = \"hello\"\nlibrary = \"libhello.so\"\nsha256 = \"{pin}\"\n\
             [provider.settings]\ndigits = 4\n\n\
             [[provider]]\nid = \"hello-iso\"\nlibrary = \"libhello.so\"\nsha256 = \"{pin}\"\nisolation = \"process\"\n",
            rolegate_bin().display()
        ),
    );
    let config = Config::load(&cfg).unwrap();
    let providers = rolegate::plugins::Providers::load(&config.plugins, &config.providers)
        .await
        .unwrap();
    let ids: Vec<_> = providers.iter().map(|p| p.id().to_string()).collect();
    assert_eq!(ids, ["hello", "hello-iso"]);
    for p in providers.iter() {
        assert_eq!(p.info().unwrap().id, "hello");
        assert_eq!(p.plugin.sha256, pin);
        p.shutdown().await;
    }
}

fn toml_table(s: &str) -> toml::Table {
    toml::from_str(s).unwrap()
}
