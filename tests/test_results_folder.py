"""One results folder, several `softlabel` commands (real subprocesses; `--resume` and `report` beside a running one also in
this process, through `cli.main`): the same command started twice, `--resume` and `softlabel report` while a command
runs, a command killed outright, a run that lost a file. No traceback, no run lost, the final tables complete."""
import json, re, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd, pytest

EXE = Path(sys.executable).parent/'softlabel'
FAST = ['--epochs', '1', '--n-per-class', '8', '--size', '16', '--bs', '16', '--backbone', 'resnet10t', '--progress', 'log',
        '--methods', 'baseline', '--out', 'res']

def start(args, cwd): return subprocess.Popen([str(EXE), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
def run(args, cwd): return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=600)

def wait_for(path:Path, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline: time.sleep(0.05)
    assert path.exists(), proc.communicate()[1][-2000:]

def error_line(stderr:str)->str:
    "The one line a refused command prints (and nothing else: no traceback, no warning)"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('softlabel: error: '), stderr[-3000:]
    return lines[0]

def seeds_in_tables(out:Path)->list: return sorted(pd.read_csv(out/'runs.csv').seed)

def here(args, cwd, monkeypatch, capsys)->tuple:
    "`softlabel args` in this process (`cli.main`, as the console script calls it), beside the real subprocesses: (exit code, stdout, stderr)"
    from fastai_softlabel.cli import main
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try: main(list(args)); code = 0
    except SystemExit as e: code = e.code or 0
    out = capsys.readouterr()
    return code,out.out,out.err

def test_the_same_command_twice_at_once(tmp_path):
    "Both start together: one makes the folder and runs everything, the other says the folder is taken and writes nothing"
    args = FAST + ['--seeds', '0,1,2,3']
    a,b = start(args, tmp_path),start(args, tmp_path)
    (_,err_a),(_,err_b) = a.communicate(timeout=600),b.communicate(timeout=600)
    assert sorted([a.returncode, b.returncode]) == [0, 2], (err_a[-2000:], err_b[-2000:])
    winner_err,loser_err = (err_a, err_b) if a.returncode == 0 else (err_b, err_a)
    assert 'Traceback' not in winner_err
    assert re.match(r'softlabel: error: the results folder res (is in use by another softlabel command|was made by another command '
                    r'meanwhile|exists already)', error_line(loser_err))
    assert seeds_in_tables(tmp_path/'res') == [0, 1, 2, 3] and (tmp_path/'res'/'report.html').exists()

def test_resume_and_report_while_a_command_runs(tmp_path, monkeypatch, capsys):
    "--resume during a run is refused (the running command finishes); report shows the finished runs and writes nothing"
    args = FAST + ['--epochs', '2', '--seeds', ','.join(map(str, range(10)))]
    a = start(args, tmp_path)
    out = tmp_path/'res'
    wait_for(out/'runs'/'baseline_seed0_c0'/'row.json', a)
    code,_,err = here(args + ['--resume'], tmp_path, monkeypatch, capsys)
    assert code == 2 and error_line(err) == (
        "softlabel: error: the results folder res is in use by another softlabel command: wait for it to finish (it finishes the runs "
        "itself; --resume is for a command that was stopped)")
    code,stdout,err = here(['report', 'res'], tmp_path, monkeypatch, capsys)
    assert code == 0 and 'Traceback' not in err, err[-2000:]
    assert a.poll() is None, 'the command finished before the report: make its runs longer'
    assert 'is in use by a running softlabel command' in stdout and 'nothing was written' in stdout
    assert 'results in' not in stdout                                      # it wrote nothing, and says only that
    shown,missing = int(re.search(r'(\d+) runs;', stdout)[1]),int(re.search(r'(\d+) run\(s\) not in the tables', stdout)[1])
    assert shown + missing == 10 and f'the tables of its {shown} finished runs, read once' in stdout   # one reading of the folder
    assert not (out/'report.html').exists() and not (out/'runs.csv').exists()
    _,err = a.communicate(timeout=600)
    assert a.returncode == 0 and 'Traceback' not in err, err[-2000:]
    assert seeds_in_tables(out) == list(range(10))   # no run lost

def test_a_killed_command_leaves_the_folder_to_resume(tmp_path):
    "SIGKILL (no clean-up at all): the lock goes with the process, --resume finishes the comparison"
    args = FAST + ['--seeds', ','.join(map(str, range(8)))]
    a = start(args, tmp_path)
    wait_for(tmp_path/'res'/'runs'/'baseline_seed0_c0'/'row.json', a)
    a.send_signal(signal.SIGKILL); a.communicate(timeout=60)
    r = run(args + ['--resume'], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert seeds_in_tables(tmp_path/'res') == list(range(8))

def test_report_names_an_incomplete_run_and_resume_runs_it_again(tmp_path, monkeypatch, capsys):
    args = FAST + ['--seeds', '0,1,2']
    assert run(args, tmp_path).returncode == 0
    out = tmp_path/'res'
    (out/'runs'/'baseline_seed1_c0'/'curves.csv').unlink()                    # a run that lost a file
    (out/'runs'/'baseline_seed2_c0'/'row.json').write_text('{"method": ')      # and one whose row was cut short
    code,stdout,err = here(['report', 'res'], tmp_path, monkeypatch, capsys)
    assert code == 0 and 'Traceback' not in err, err[-2000:]
    assert ('2 run(s) not in the tables: baseline_seed1_c0 (no curves.csv); baseline_seed2_c0 (row.json cannot be read)' in stdout), stdout
    assert seeds_in_tables(out) == [0]
    assert 'baseline_seed1_c0 (no curves.csv)' in (out/'report.html').read_text()
    r = run(args + ['--resume'], tmp_path)
    assert r.returncode == 0 and 'running again 2 incomplete run(s)' in r.stdout, r.stdout + r.stderr[-2000:]
    assert seeds_in_tables(out) == [0, 1, 2] and 'not in the tables' not in (out/'report.html').read_text()
