use super::*;

fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
    let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
    let mut m = StopMatcher::new(&stops);
    let mut out = String::new();
    for p in pieces {
        let (text, stopped) = m.push(p);
        out.push_str(&text);
        if stopped {
            return (out, true);
        }
    }
    out.push_str(&m.finish());
    (out, false)
}

#[test]
fn no_stops_passes_everything() {
    assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
}

#[test]
fn stop_inside_one_token() {
    assert_eq!(run(&["END"], &["abcENDxyz"]), ("abc".into(), true));
}

#[test]
fn stop_across_token_boundaries_is_never_emitted() {
    let stops = vec!["\nUser:".to_string()];
    let mut m = StopMatcher::new(&stops);
    assert_eq!(m.push("hello\n"), ("hello".into(), false));
    assert_eq!(m.push("Us"), ("".into(), false));
    assert_eq!(m.push("er: more"), ("".into(), true));
}

#[test]
fn false_alarm_is_released() {
    assert_eq!(
        run(&["\nUser:"], &["a\n", "Usb", "c"]),
        ("a\nUsbc".into(), false)
    );
}

#[test]
fn earliest_of_several_stops_wins() {
    assert_eq!(run(&["zz", "b"], &["abzz"]), ("a".into(), true));
}

#[test]
fn multibyte_text_is_cut_on_char_boundaries() {
    assert_eq!(run(&["é!"], &["caf", "é", "?"]), ("café?".into(), false));
    assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
}
