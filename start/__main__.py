from start.entry import main

main()
