from ascend.cli.main import main

main()
