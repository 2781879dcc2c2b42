//! punnet-agent library (wired in a following commit).
