from start.cli import main

main()
