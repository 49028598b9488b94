/**
 * Tasks: work that outlives a request (Glance's tasks API, and every image import), kept as
 * a row in the database and run by whichever API node claims it.
 *
 * Each node runs a worker loop: it claims a runnable task with a lease (repo/tasks.ts), renews
 * the lease while the task runs (recording the bytes moved), and ends the task — success or
 * failure, with its image's change — in one transaction. A node that dies stops renewing; once
 * its lease has run out another node claims the task and runs it again from the start (the
 * runner makes the image importing again if the dead run's cleanup left it queued), and a task
 * that has been started `maxAttempts` times is failed cleanly instead, its image back to queued.
 * A node that stops in an orderly way gives its tasks back at once.
 *
 * Each node also writes a heartbeat (with its worker_self_reference_url, if any). A task tied
 * to a stage host (a glance-direct import of data staged there) is that node's alone while it
 * beats — even pending, or given back; once the heartbeat has run out any node claims it, to
 * fail it (the staged data is on the dead node), rather than leave it pending forever. The
 * heartbeat also tells other nodes which uploads are a dead node's (ImageDataService.reapDeadUploads).
 *
 * The dead run's partial data (its upload row's temporary key, which the claim replaces) is
 * removed by the node that took the task over, while that node runs — not left until the dead
 * node starts again, which it may never do. A key the store cannot remove yet (an RBD image
 * the dead client's watch holds, up to the OSDs' 30 s watch timeout) is tried again at each
 * poll, for ABANDONED_RETRY_MS; what is still there then is left to the next start's sweep.
 */
import { randomUUID } from 'node:crypto';
import type { AuthContext } from '../identity.js';
import { HttpError, badRequest, notFound } from '../http.js';
import type { Logger } from '../log.js';
import type { Policy } from '../policy/index.js';
import { PolicyNotAuthorized } from '../policy/index.js';
import type { ImageChange, NewTask, TaskRecord, TaskRepo } from '../repo/tasks.js';
import { TASK_STATUSES } from '../repo/tasks.js';
import { joinTempKeys, splitTempKeys } from '../repo/images.js';

export interface TaskOptions {
  /** This API node's name in leases. */
  node: string;
  /** How long a claim lasts without renewal (ms); renewed every third of it. */
  leaseMs: number;
  /** How often an idle node looks for runnable tasks (ms). */
  pollMs: number;
  /** Runs of one task before it is failed instead of started again. */
  maxAttempts: number;
  /** Tasks one node runs at once. */
  concurrency: number;
  /** Glance's [task] task_time_to_live (hours): a finished task is listed until then. */
  timeToLiveHours: number;
  /** Remove the temporary data of runs that died mid-write from the stores; returns the keys removed. */
  dropTempData(keys: ReadonlySet<string>): Promise<string[]>;
  /** This node's worker_self_reference_url (known once it listens): it claims the tasks tied to it as their stage host. */
  stageHost?: () => string | undefined;
  /** Put back the uploads of nodes whose heartbeat ran out (run at each poll, one pass at a time). */
  reapDeadUploads?: () => Promise<void>;
}

/** What a runner gets while it runs one task. */
export interface TaskRun {
  task: TaskRecord;
  /**
   * The temporary data keys this run writes its image's data to (the runner's tempKeys, one per
   * store it writes), recorded with the claim; empty when the task has no image.
   */
  tempKeys: string[];
  /** Aborted when this node lost the lease, or stops. */
  signal: AbortSignal;
  /** Record bytes moved so far (saved, with the task's message saying so, at the next lease renewal). */
  progress(bytes: number): void;
}

/** The outcome a runner reports: the result and the image change committed with the task's end. */
export interface TaskOutcome { result: Record<string, unknown> | null; image?: ImageChange }

/** A task's failure with the image change to commit with it. */
export class TaskFailure extends Error {
  constructor(message: string, readonly image?: ImageChange) { super(message); }
}

export interface TaskRunner {
  /** Runs the task; throws TaskFailure (or any error) to fail it. */
  run(run: TaskRun): Promise<TaskOutcome>;
  /** The image change when a task is failed without running (too many attempts). */
  abandoned(task: TaskRecord, reason: string): Promise<ImageChange | undefined>;
  /** Fresh temporary data keys for a run of `task` (its image's upload row records them before the run writes). */
  tempKeys(task: TaskRecord): string[];
}

/**
 * A running task's progress as Glance shows it: the task's message, written while the data
 * moves (its _ImportToStore status callback) and left in place when the task succeeds. The
 * tasks API has no progress field; this is the one Glance clients already display.
 */
export function progressMessage(bytes: number): string {
  return `Copied ${Math.floor(bytes / (1 << 20))} MiB`;
}

/** How long stopping waits for aborted runs to end. */
const ABORT_WAIT_MS = 5000;
/** How long a dead run's temporary data is tried again (longer than Ceph's 30 s watch timeout). */
const ABANDONED_RETRY_MS = 5 * 60_000;

/** Why a run was aborted: this node stops (the task goes back to the pool), or lost its lease. */
class Stopping extends Error {}
class LeaseLost extends Error {}

export class TaskService {
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void> }>();
  /** Temporary data keys of dead runs still to remove, with when to stop trying. */
  private readonly abandoned = new Map<string, number>();
  private dropping: Promise<void> | null = null;
  private reaping: Promise<void> | null = null;
  private timer: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private polling: Promise<void> | null = null;
  private again = false;
  private stopped = true;

  constructor(
    private readonly repo: TaskRepo,
    private readonly policy: Policy,
    private readonly runners: Record<string, TaskRunner>,
    private readonly opts: TaskOptions,
    private readonly log: Logger,
  ) {}

  // --- the API (Glance's tasks controller; every call needs tasks_api_access first)

  private creds(a: AuthContext) {
    return { user_id: a.userId, project_id: a.projectId, roles: [...a.roleNames], is_admin: a.isAdmin };
  }

  private authorize(a: AuthContext, rule: string, target: Record<string, unknown> = {}): void {
    if (!this.policy.enforce(rule, target, this.creds(a))) throw new PolicyNotAuthorized(rule);
  }

  /** Glance's TasksAPIPolicy.tasks_api_access, checked before anything else on /v2/tasks. */
  authorizeAccess(a: AuthContext): void {
    this.authorize(a, 'tasks_api_access');
  }

  /**
   * POST /v2/tasks (deprecated in Glance): the task is recorded, as Glance records it, but
   * this service runs imports only through the image import API, so a task created here ends
   * at once in failure saying so (no image is touched).
   */
  async createLegacy(a: AuthContext, requestId: string, type: string, input: Record<string, unknown> | null): Promise<TaskRecord> {
    this.authorize(a, 'add_task', { project_id: a.projectId });
    const id = randomUUID();
    const imageId = typeof input?.image_id === 'string' ? input.image_id : null;
    await this.repo.create({ id, type, owner: a.projectId, image_id: imageId, request_id: requestId, user_id: a.userId, input });
    await this.repo.finish(id, null, {
      status: 'failure', result: null, expiresAt: new Date(Date.now() + this.opts.timeToLiveHours * 3600_000).toISOString(),
      message: 'Tasks created through POST /v2/tasks are not run by this service; import image data with POST /v2/images/{image_id}/import.',
    });
    return (await this.repo.get(id))!;
  }

  async list(a: AuthContext, q: { status?: string; type?: string; sortKey: string; sortDir: string; marker?: string; limit: number }): Promise<TaskRecord[]> {
    this.authorize(a, 'tasks_api_access');
    if (q.sortDir !== 'asc' && q.sortDir !== 'desc') throw badRequest(`Invalid sort direction: ${q.sortDir}`);
    if (q.status && !(TASK_STATUSES as readonly string[]).includes(q.status)) throw badRequest(`Invalid status value: ${q.status}`);
    if (q.type && !['import', 'api_image_import'].includes(q.type)) throw badRequest(`Invalid type value: ${q.type}`);
    this.authorize(a, 'get_tasks', { project_id: a.projectId });
    return this.repo.list({ projectId: a.projectId, isAdmin: a.isAdmin }, { ...q, sortDir: q.sortDir });
  }

  async get(a: AuthContext, id: string): Promise<TaskRecord> {
    this.authorize(a, 'tasks_api_access');
    const task = await this.repo.get(id);
    const visible = task && (a.isAdmin || task.owner === null || task.owner === a.projectId)
      && (task.expires_at === null || task.expires_at >= new Date().toISOString());
    if (!visible) throw notFound(`Task with identifier ${id} not found`);
    this.authorize(a, 'get_task', { project_id: task.owner, owner: task.owner });
    return task;
  }

  /** GET /v2/images/{id}/tasks: the image's tasks (the caller's access to the image is checked by the caller). */
  ofImage(a: AuthContext, imageId: string): Promise<TaskRecord[]> {
    return this.repo.ofImage({ projectId: a.projectId, isAdmin: a.isAdmin }, imageId);
  }

  /**
   * A new task of `type` for `a`, committed with `image`'s change (false: the image changed
   * first, nothing written); the worker is told at once. `id` when the image change must name
   * the task (os_glance_import_task); `stageHost` when only that node may run it.
   */
  async create(a: AuthContext, requestId: string, type: string, input: Record<string, unknown>, image?: ImageChange, id: string = randomUUID(), stageHost: string | null = null): Promise<TaskRecord | false> {
    if (!this.runners[type]) throw badRequest(`Task type ${type} is not supported.`);
    const task: NewTask = { id, type, owner: a.projectId, image_id: image?.id ?? null, request_id: requestId, user_id: a.userId, input, stage_host: stageHost };
    if (!(await this.repo.create(task, image))) return false;
    this.kick();
    return (await this.repo.get(task.id))!;
  }

  // --- the worker

  /**
   * Give back what this node held when it last stopped (a crash, same node name), with their
   * upload rows: before the image data's recovery, which would otherwise revert their images.
   */
  async recover(): Promise<void> {
    const released = await this.repo.releaseNode(this.opts.node);
    if (released.length) this.log.info('released tasks of an earlier run of this node', { tasks: released });
  }

  /**
   * Start claiming tasks (after recovery: a claim writes an upload row recovery would take for a
   * dead one; and once this node's worker_self_reference_url is known: its first heartbeat is
   * written before it claims, so that it takes its own staged imports back rather than taking
   * them for a dead node's).
   */
  async start(): Promise<void> {
    await this.beat();
    this.stopped = false;
    this.timer = setInterval(() => { this.kick(); this.dropAbandoned(); this.reap(); }, this.opts.pollMs);
    this.timer.unref();
    this.heartbeat = setInterval(() => { this.beat().catch((e) => this.log.warn('heartbeat failed', { error: (e as Error).message })); }, Math.max(50, Math.floor(this.opts.leaseMs / 3)));
    this.heartbeat.unref();
    this.kick();
  }

  /**
   * This node's heartbeat, with its worker_self_reference_url if it has one: while it beats,
   * the imports of data staged here are this node's alone and its uploads are its own; once it
   * has not beaten for a lease, other nodes take its staged imports to fail them (repo/tasks.ts
   * claimableHere) and put back the uploads it was writing (ImageDataService.reapDeadUploads).
   */
  private async beat(): Promise<void> {
    const url = this.opts.stageHost?.() ?? null;
    const nowMs = Date.now();
    if (await this.repo.beat(this.opts.node, url, nowMs, nowMs + this.opts.leaseMs)) {
      this.log.warn('this node\'s heartbeat had run out: other nodes may have failed the imports of data staged here and put back its uploads', { node: this.opts.node });
    }
  }

  /** Look for runnable tasks now (a task was created, or one finished and a slot is free). */
  kick(): void {
    if (this.stopped) return;
    if (this.polling) { this.again = true; return; }
    this.polling = this.poll().catch((e) => this.log.error('task poll failed', { error: (e as Error).message }))
      .finally(() => {
        this.polling = null;
        if (this.again) { this.again = false; this.kick(); }
      });
  }

  private async poll(): Promise<void> {
    while (!this.stopped && this.running.size < this.opts.concurrency) {
      const nowMs = Date.now();
      let tempKeys: string[] = [];
      let replaced: string[] = [];
      const task = await this.repo.claim(this.opts.node, nowMs, nowMs + this.opts.leaseMs, (claimed, earlier) => {
        replaced = earlier.flatMap(splitTempKeys);
        tempKeys = this.runners[claimed.type]?.tempKeys(claimed) ?? [];
        return joinTempKeys(tempKeys);
      }, this.opts.stageHost?.());
      if (!task) return;
      this.launch(task, tempKeys);
      if (replaced.length) {
        this.log.info('task taken over from a run that stopped; removing its partial data', { task: task.id, attempt: task.attempts });
        for (const key of replaced) this.abandoned.set(key, Date.now() + ABANDONED_RETRY_MS);
        this.dropAbandoned();
      }
    }
  }

  /** One pass over dead nodes' uploads (not two at once). */
  private reap(): void {
    if (this.reaping || !this.opts.reapDeadUploads) return;
    this.reaping = this.opts.reapDeadUploads().catch((e) => this.log.warn('putting back dead nodes\' uploads failed', { error: (e as Error).message }))
      .finally(() => { this.reaping = null; });
  }

  /** One pass over the dead runs' temporary data (not two at once). */
  private dropAbandoned(): void {
    if (this.dropping || this.abandoned.size === 0) return;
    this.dropping = this.opts.dropTempData(new Set(this.abandoned.keys())).then((removed) => {
      for (const key of removed) this.abandoned.delete(key);
      if (removed.length) this.log.info('removed the partial data of runs that stopped', { keys: removed });
    }, (e) => this.log.warn('removing the partial data of runs that stopped failed', { error: (e as Error).message })).finally(() => {
      const nowMs = Date.now();
      for (const [key, until] of this.abandoned) {
        if (until > nowMs) continue;
        this.abandoned.delete(key);
        this.log.warn('partial data of a run that stopped is still in a store; the next start\'s sweep removes it', { key });
      }
      this.dropping = null;
    });
  }

  private launch(task: TaskRecord, tempKeys: string[]): void {
    const abort = new AbortController();
    const done = this.execute(task, tempKeys, abort).finally(() => {
      this.running.delete(task.id);
      this.kick();
    });
    this.running.set(task.id, { abort, done });
  }

  private async execute(task: TaskRecord, tempKeys: string[], abort: AbortController): Promise<void> {
    const runner = this.runners[task.type];
    const expiresAt = () => new Date(Date.now() + this.opts.timeToLiveHours * 3600_000).toISOString();
    const fail = async (message: string, image?: ImageChange) => {
      const ok = await this.repo.finish(task.id, this.opts.node, { status: 'failure', result: null, message, expiresAt: expiresAt() }, image);
      if (ok) this.log.warn('task failed', { task: task.id, image: task.image_id, error: message });
    };
    if (!runner) return fail(`Task type ${task.type} is not supported by this node.`);
    if (task.attempts > this.opts.maxAttempts) {
      const reason = `Task ${task.id} was started ${task.attempts - 1} times and its node stopped each time; it is not tried again.`;
      return fail(reason, await runner.abandoned(task, reason));
    }
    let progress = task.progress;
    let moved = false;
    let renewing: Promise<unknown> = Promise.resolve();
    const renewal = setInterval(() => {
      renewing = this.repo.renew(task.id, this.opts.node, Date.now() + this.opts.leaseMs, progress, moved ? progressMessage(progress) : undefined).then((held) => {
        if (!held) abort.abort(new LeaseLost(`Task ${task.id}: this node's lease ran out and another node took the task.`));
      }).catch((e) => this.log.warn('task lease renewal failed', { task: task.id, error: (e as Error).message }));
    }, Math.max(50, Math.floor(this.opts.leaseMs / 3)));
    try {
      this.log.info('task started', { task: task.id, type: task.type, image: task.image_id, attempt: task.attempts });
      const outcome = await runner.run({ task, tempKeys, signal: abort.signal, progress: (n) => { progress = n; moved = true; } });
      clearInterval(renewal);
      await renewing;
      const message = moved ? progressMessage(progress) : '';
      const ok = await this.repo.finish(task.id, this.opts.node, { status: 'success', result: outcome.result, message, expiresAt: expiresAt() }, outcome.image);
      if (ok) this.log.info('task succeeded', { task: task.id, image: task.image_id });
    } catch (e) {
      clearInterval(renewal);
      await renewing;
      const reason = abort.signal.reason;
      if (reason instanceof Stopping) {
        await this.repo.release(task.id, this.opts.node);
        this.log.info('task given back: this node stops', { task: task.id });
      } else if (reason instanceof LeaseLost) {
        this.log.warn('task abandoned: lease lost', { task: task.id });
      } else {
        await fail(e instanceof HttpError || e instanceof TaskFailure ? e.message : `Task failed: ${(e as Error).message}`, e instanceof TaskFailure ? e.image : undefined);
      }
    }
  }

  /** Stop claiming; wait up to `graceMs` for running tasks, then abort them and give them back. */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    // (the heartbeat stops too: a node that does not come back within a lease has its staged imports failed by the others)
    clearInterval(this.heartbeat);
    await this.polling;
    await this.dropping;
    await this.reaping;
    const all = () => Promise.allSettled([...this.running.values()].map((r) => r.done));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all(), new Promise<void>((r) => { timer = setTimeout(r, graceMs); })]);
    clearTimeout(timer);
    for (const r of this.running.values()) r.abort.abort(new Stopping('this node stops'));
    // A run that does not end when aborted must not hold the process: its task is given back regardless.
    await Promise.race([all(), new Promise<void>((r) => { timer = setTimeout(r, ABORT_WAIT_MS); })]);
    clearTimeout(timer);
    for (const id of this.running.keys()) {
      this.log.error('task did not stop when aborted; given back', { task: id });
      await this.repo.release(id, this.opts.node).catch(() => {});
    }
  }
}
