from stagewise.cli.main import run

run()
