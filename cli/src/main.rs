//! punnet binary (wired in a following commit).

fn main() {}
