"""The library side of ``scripts/``: data preparation, the instruct evaluation, the memory
planner, file helpers. Registering the plugin (``--user-dir diffusion_plugin``) imports
none of it. Nothing here parses arguments or exits the process: bad input raises
``ValueError`` or ``FileNotFoundError`` with a message naming the file or flag, and the
scripts turn it into their ``error:`` line and exit code."""
