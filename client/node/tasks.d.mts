// Types for tasks.mjs, so that a TypeScript BFF (Next.js) gets them checked. Field names are the proto's;
// what proto-loader gives back: enums as their names, int64 seconds as strings, unset messages as null.
import type { ChannelCredentials } from "@grpc/grpc-js";

export type Priority = "PRIORITY_UNSPECIFIED" | "PRIORITY_LOW" | "PRIORITY_MEDIUM" | "PRIORITY_HIGH";

export interface Timestamp {
  seconds: string | number;
  nanos?: number;
}

export interface Task {
  name: string;
  title: string;
  description: string;
  completed: boolean;
  priority: Priority;
  due_time: Timestamp | null;
  create_time: Timestamp | null;
  update_time: Timestamp | null;
  complete_time: Timestamp | null;
  etag: string;
}

/** What a request may set on a task: the server fills in the rest. */
export type TaskInput = Partial<Omit<Task, "create_time" | "update_time" | "complete_time">>;

export interface CreateTaskRequest {
  parent?: string;
  task: TaskInput;
  request_id?: string;
}

export interface GetTaskRequest {
  name: string;
}

export interface ListTasksRequest {
  parent?: string;
  page_size?: number;
  page_token?: string;
  completed?: boolean;
  query?: string;
  order_by?: string;
}

export interface ListTasksResponse {
  tasks: Task[];
  next_page_token: string;
  total_size: number;
}

export interface UpdateTaskRequest {
  task: TaskInput & { name: string };
  update_mask?: { paths: string[] };
}

export interface DeleteTaskRequest {
  name: string;
  etag?: string;
}

export interface TaskCalls {
  createTask(request: CreateTaskRequest): Promise<{ task: Task }>;
  getTask(request: GetTaskRequest): Promise<{ task: Task }>;
  listTasks(request?: ListTasksRequest): Promise<ListTasksResponse>;
  updateTask(request: UpdateTaskRequest): Promise<{ task: Task }>;
  deleteTask(request: DeleteTaskRequest): Promise<Record<string, never>>;
}

export interface TaskService {
  forUser(token: string, options?: { requestId?: string }): TaskCalls;
  close(): void;
}

export interface OpenOptions {
  credentials?: ChannelCredentials;
  protosDir?: string;
  timeoutMs?: number;
}

export function openTaskService(target: string, options?: OpenOptions): TaskService;

export class TaskServiceError extends Error {
  /** The gRPC status name: "NOT_FOUND", "UNAUTHENTICATED", ... */
  readonly code: string;
  /** The google.rpc.ErrorInfo reason: "TOKEN_EXPIRED", "TASK_NOT_FOUND", ... ("" if none). */
  readonly reason: string;
  /** The google.rpc.BadRequest field violations, as { field: description }. */
  readonly violations: Record<string, string>;
  /** For a createTask: the request_id it was sent with; pass it again to retry without a duplicate. */
  readonly requestId?: string;
}
