"Start `world_size` ranks of a script on this machine (CPU, gloo) and wait for them, killing all on a failure or a time-out."
import os, sys, socket, subprocess, tempfile, time

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def _tail(f, n=3000):
    f.seek(0); return f.read().decode(errors='replace')[-n:]

def use_cpu_broadcast():
    "In a rank: fastai's `DistributedDL` broadcasts the sample order with `.cuda()` (NCCL); gloo takes CPU tensors (what the `softlabel` command does on the CPU)"
    from fastai_softlabel.experiments import use_cpu_broadcast
    use_cpu_broadcast()

def run_ranks(script, world_size=2, timeout=120, args=(), env=None):
    "Run `script` as `world_size` gloo ranks; kill all and raise if any fails or time runs out."
    port = free_port()
    base = {**os.environ, **(env or {}), 'WORLD_SIZE': str(world_size), 'LOCAL_WORLD_SIZE': str(world_size),
            'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port), 'OMP_NUM_THREADS': '1',
            'PYTHONUNBUFFERED': '1'}
    procs, errs = [], []
    try:
        for r in range(world_size):
            e = tempfile.TemporaryFile()
            errs.append(e)
            procs.append(subprocess.Popen([sys.executable, str(script), *map(str, args)],
                                          env={**base, 'RANK': str(r), 'LOCAL_RANK': str(r)},
                                          stdout=e, stderr=subprocess.STDOUT))
        deadline, failed = time.monotonic() + timeout, None
        while True:
            rcs = [p.poll() for p in procs]
            failed = next((r for r, rc in enumerate(rcs) if rc not in (None, 0)), None)
            if failed is not None or all(rc == 0 for rc in rcs): break
            if time.monotonic() > deadline: failed = 'timeout'; break
            time.sleep(0.05)
        if failed is None: return [_tail(e) for e in errs]
        for p in procs:
            if p.poll() is None: p.kill()
        for p in procs: p.wait()
        msg = '\n'.join(f'--- rank {r} (rc={p.returncode}) ---\n{_tail(e)}' for r, (p, e) in enumerate(zip(procs, errs)))
        why = f'timed out after {timeout}s' if failed == 'timeout' else f'rank {failed} failed'
        raise RuntimeError(f'{script}: {why} (port {port})\n{msg}')
    finally:
        for p in procs:
            if p.poll() is None: p.kill(); p.wait()
        for e in errs: e.close()

if __name__ == '__main__':
    t = time.time()
    outs = run_ranks(sys.argv[1], args=sys.argv[2:])
    for r, o in enumerate(outs): print(f'--- rank {r} ---\n{o}')
    print(f'wall {time.time() - t:.1f}s')
