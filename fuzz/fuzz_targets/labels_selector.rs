//! Node labels (`--label`, `GPUFLEET_LABELS`, a Hello's labels) and label selectors (query
//! requests, policy rules, alert routes): parsed, printed and parsed again to the same thing.
#![no_main]

use gpufleet_model::Selector;
use gpufleet_model::labels::{format_labels, parse_labels};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = Selector::parse(text) {
        let printed = s.to_string();
        let again = Selector::parse(&printed).expect("a printed selector parses");
        assert_eq!(again, s, "{text:?} printed as {printed:?}");
    }
    if let Ok(l) = parse_labels([text]) {
        let printed = format_labels(&l);
        assert_eq!(
            parse_labels([printed.as_str()]).as_ref(),
            Ok(&l),
            "{printed:?}"
        );
    }
});
