fn main() {
    let (_tr, ev) = peftc_runtime::data::split(100, 0.1, 3);
    println!("{:?}", ev);
}
