"""The benchmark: todo-server against the bare grpcio ceiling and the FastAPI alternative (`make bench`)."""
