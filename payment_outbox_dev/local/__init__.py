"""The local stack: the functions, the AWS emulator and the database live on one machine."""
