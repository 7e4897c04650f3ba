"""The alternative: the same GetTask work on FastAPI + uvicorn (the REST stack this service replaces).

Same checks, same lookup: PyJWT HS256 verification of the bearer token, then the same TaskRepository
(SQLAlchemy, scoped to the caller) that todo-server uses. A sync endpoint, as full-stack-fastapi-template
writes them. `python -m bench.fastapi_app --port P --database-url URL --secret-file F` serves until killed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import jwt
import uvicorn
from fastapi import FastAPI, Header, HTTPException

from server.db.repository import TaskRepository
from server.db.session import Database
from server.errors import NotFound
from server.identity import Identity, set_identity
from server.services.resource_names import task_name


def create_app(*, secret: bytes, database_url: str, pool_size: int = 16) -> FastAPI:
    repository = TaskRepository(Database(database_url, pool_size=pool_size))
    app = FastAPI()

    @app.get("/v1/users/me/tasks/{task_id}")
    def get_task(task_id: str, authorization: str = Header(default="")) -> dict[str, Any]:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(status_code=401, detail="send 'Bearer <jwt>'")
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        except jwt.InvalidTokenError:
            raise HTTPException(status_code=401, detail="invalid token") from None
        set_identity(Identity(user_id=claims["sub"]))  # the endpoint runs in a copied context: per request
        try:
            record = repository.get(task_id=task_id)
        except NotFound:
            raise HTTPException(status_code=404, detail="task not found") from None
        return {
            "name": task_name(record.owner_id, record.task_id),
            "title": record.title,
            "description": record.description,
            "completed": record.completed,
            "priority": int(record.priority),
            "create_time": record.create_time.isoformat(),
            "update_time": record.update_time.isoformat(),
            "etag": record.etag,
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    args = parser.parse_args()
    app = create_app(secret=args.secret_file.read_bytes().strip(), database_url=args.database_url)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
