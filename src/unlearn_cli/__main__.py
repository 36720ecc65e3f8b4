from unlearn_cli.cli import main

main()
