"""The install stage: wheels unpacked into a target environment, journalled and rolled back on failure."""
