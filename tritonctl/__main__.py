from tritonctl.cli.main import main

main()
