"""The command line: click commands, and the text, JSON, graphs and logs people and scripts read."""
