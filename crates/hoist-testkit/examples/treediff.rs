//! `treediff EXPECTED ACTUAL [--no-root-meta]`: compares two directory trees the way the tests do.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let a = hoist_testkit::tree::Tree::scan(std::path::Path::new(&args[1])).unwrap();
    let b = hoist_testkit::tree::Tree::scan(std::path::Path::new(&args[2])).unwrap();
    let mut cmp = hoist_testkit::tree::Compare::default();
    if args.iter().any(|x| x == "--no-root-meta") {
        cmp.root_meta = false;
    }
    if args.iter().any(|x| x == "--no-specials") {
        cmp.specials = false;
    }
    let d = a.diff(&b, &cmp);
    println!(
        "{} nodes vs {} nodes, {} differences",
        a.nodes.len(),
        b.nodes.len(),
        d.len()
    );
    for l in d.iter().take(40) {
        println!("{l}");
    }
    std::process::exit(if d.is_empty() { 0 } else { 1 });
}
