from cistern.cli.main import main

main()
