//! punnet-controller binary (wired in a following commit).

fn main() {}
