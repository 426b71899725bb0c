"""Fleet side of edgert: the broker and the monitor that devices report to."""
