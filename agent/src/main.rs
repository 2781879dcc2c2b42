//! punnet-agent binary (wired in a following commit).

fn main() {}
