//! An ERROR in the log is worth someone's attention: routine requests must not write one. Its own
//! test target, because it captures the process's whole log.

mod support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use orchestrator::app::Roles;
use platform::messaging::relay::RelayFaults;
use support::{ADMIN_KEY, TestEnv, client};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn asking_about_participants_and_readiness_logs_no_error() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt().with_ansi(false).with_env_filter("warn").with_writer(move || writer.clone()).init();
    let env = TestEnv::new().await;
    let app = env.start(Roles::serve(), RelayFaults::default()).await;
    let api = client(&app, ADMIN_KEY);
    for _ in 0..5 {
        api.get("/participants").send().await.assert_status_is_ok();
        api.get("/health/ready").send().await.assert_status_is_ok();
    }
    app.stop().await;
    env.teardown().await;
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    let errors: Vec<&str> = log.lines().filter(|line| line.contains("ERROR")).collect();
    assert!(errors.is_empty(), "routine requests logged errors:\n{}", errors.join("\n"));
}
