//! Turning run events into what people read: the terminal, the run log, the summary.
