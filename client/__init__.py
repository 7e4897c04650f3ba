"""Python client for todo.v1.TaskService: the generated stubs live in `todo.v1`; this adds the `todo` CLI."""
