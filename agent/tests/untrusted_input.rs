//! Property tests: scenario files and /proc text are input from outside; nothing in them may
//! make the agent panic — a bad file gets an error that names it.

use gpufleet_agent::sources::host::parse_proc_net_dev;
use gpufleet_sim::Scenario;
use proptest::prelude::*;

/// Fragments that make random text look like a scenario, so the parser gets past TOML syntax.
fn scenario_like() -> impl Strategy<Value = String> {
    let kinds = prop::sample::select(vec![
        "thermal_throttle",
        "pcie_downtrain",
        "xid",
        "clocks_locked",
        "nope",
    ]);
    (
        kinds,
        "[0-9]{1,3}",
        "[0-9a-z]{0,4}",
        prop::sample::select(vec!["gen", "xid", "width", "sm_clock_mhz", "memory_clock_mhz", "bogus"]),
        "-?[0-9]{1,6}",
    )
        .prop_map(|(kind, gpu, start, key, val)| {
            format!(
                "name = \"p\"\n[fleet]\nnodes = 2\n[[fault]]\nkind = \"{kind}\"\ngpu = {gpu}\nstart = \"{start}\"\n{key} = {val}\n"
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = Scenario::parse(&text, "fuzz");
    }

    #[test]
    fn scenario_like_text_parses_or_names_the_problem(text in scenario_like()) {
        if let Err(e) = Scenario::parse(&text, "fuzz.toml") {
            prop_assert!(e.to_string().contains("fuzz.toml"), "{}", e);
        }
    }

    #[test]
    fn proc_net_dev_never_panics(text in "(.{0,60}\n){0,6}") {
        let _ = parse_proc_net_dev(&text);
    }
}
