"""todo-tasks: the TaskService gRPC server."""
