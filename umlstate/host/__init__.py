"""The host: every system call umlstate makes on kernels, files and processes lives below here."""
