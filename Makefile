# One entry point for people and CI. Everything runs from .venv, made on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BUF := node_modules/.bin/buf
PROTO_OUT := protos

.PHONY: run test soak lint format proto proto-check bench bench-pagination clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(BUF):
	npm install --silent --no-audit --no-fund --no-save @bufbuild/buf@1.75.0

.env:
	@umask 077 && echo "BETTER_AUTH_SECRET=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))')" > .env
	@echo "Wrote .env with a fresh random BETTER_AUTH_SECRET (dev only)."

## run: serve on [::]:50051 with SQLite in ./todo.db (no set-up needed; TODO_LISTEN=[::]:50061 make run serves
## on another port)
TODO_LISTEN ?= [::]:50051
RUN_TARGET = localhost:$(lastword $(subst :, ,$(TODO_LISTEN)))
run: $(INSTALLED) .env
	@echo "todo-server: listening on $(TODO_LISTEN), tasks in ./todo.db. In another terminal:"
	@echo "  export TODO_TOKEN=\$$($(BIN)/todo token --sub alice)$(if $(filter localhost:50051,$(RUN_TARGET)),, TODO_TARGET=$(RUN_TARGET))"
	@echo "  $(BIN)/todo add \"Buy milk\" --priority high && $(BIN)/todo ls"
	@echo "  $(BIN)/grpcurl -plaintext $(RUN_TARGET) list"
	@echo "  $(BIN)/grpcurl -plaintext -H \"authorization: Bearer \$$TODO_TOKEN\" -d '{\"parent\":\"users/me\",\"task\":{\"title\":\"Buy milk\"}}' $(RUN_TARGET) todo.v1.TaskService/CreateTask"
	@echo "  $(BIN)/grpcurl -plaintext -H \"authorization: Bearer \$$TODO_TOKEN\" -d '{\"parent\":\"users/me\"}' $(RUN_TARGET) todo.v1.TaskService/ListTasks"
	@set -a && . ./.env && set +a && exec $(BIN)/todo-server --migrate --listen '$(TODO_LISTEN)'

## test: the whole suite
test: $(INSTALLED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## soak: the fault tests at length, plus the ones too long or too disruptive for `make test`;
## rewrites the results table in docs/reliability.md
soak: $(INSTALLED)
	TODO_TEST_DATABASE_URL=$${TODO_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
	TODO_SOAK=1 HYPOTHESIS_PROFILE=soak TODO_RELIABILITY_REPORT=docs/reliability.md \
		$(BIN)/python -m pytest -m "soak or not soak" tests/faults tests/test_hostile_input.py $(PYTEST_ARGS)

## bench: the benchmark (h2load against todo-server, bare grpcio, FastAPI); writes docs/benchmarks.md
# Not part of `test`: it takes ~20 minutes. BENCH_SECONDS=2 BENCH_ROUNDS=1 BENCH_RSS_SECONDS=0 for a quick look.
bench: $(INSTALLED)
	@command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }
	@command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; } || \
		echo "perf could not be installed: the native profile is skipped"
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

## bench-pagination: page 1 vs page 1,000 of 100,000 tasks, every order_by, SQLite and PostgreSQL;
## rewrites docs/pagination-benchmark.md (PostgreSQL from TODO_TEST_DATABASE_URL, a scratch database)
bench-pagination: $(INSTALLED)
	TODO_TEST_DATABASE_URL=$${TODO_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
		$(BIN)/python -m bench.pagination $(BENCH_ARGS)

## lint: ruff, buf lint, buf format
lint: $(INSTALLED) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BUF) lint
	$(BUF) format -d --exit-code

format: $(INSTALLED) $(BUF)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BUF) format -w

## proto: regenerate the Python code (messages, stubs, .pyi) from protos/
proto: $(INSTALLED)
	$(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		protos/todo/v1/*.proto

## proto-check: fail if the committed generated code is not what `make proto` makes
proto-check: proto
	@test -z "$$(git status --porcelain -- $(PROTO_OUT))" || \
		{ git status --short -- $(PROTO_OUT); echo "generated code is stale: run make proto and commit"; exit 1; }

clean:
	rm -rf $(VENV) node_modules build *.egg-info
