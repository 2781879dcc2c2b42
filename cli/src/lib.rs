//! punnet CLI library (wired in a following commit).
