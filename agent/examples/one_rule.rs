fn main() {
    let a: Vec<String> = std::env::args().collect();
    let ds = std::fs::read_to_string(&a[1]).unwrap();
    let t = std::time::Instant::now();
    let out = fleet_agent::scap::one_rule_datastream(&ds, &a[2]).unwrap();
    eprintln!("{} bytes in {:?}", out.len(), t.elapsed());
    std::fs::write(&a[3], out).unwrap();
}
